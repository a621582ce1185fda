"""A researcher with the ordinary syft client (run with the syft venv's python, not dcp's).

Logs in to the low side, browses the mock asset, writes two ``@sy.syft_function``s, tries them on the
mock, requests their execution and prints one JSON line; then waits for a line on stdin (the data owner
has answered) and prints what PySyft gives back for each request.
"""

import json
import sys


def main() -> None:
    url, port, email, password, dataset = sys.argv[1:6]
    import syft as sy

    client = sy.login(url=url, port=int(port), email=email, password=password)
    asset = client.datasets[dataset].assets[0]
    mock = asset.mock

    @sy.syft_function_single_use(tax=asset)
    def sector_vat(tax):
        return tax.groupby("sector").agg(count=("vat_paid", "size"), mean_vat=("vat_paid", "mean")).reset_index()

    @sy.syft_function_single_use(tax=asset)
    def raw_rows(tax):
        print(tax.to_string())
        return {"rows": int(len(tax))}

    tried = sector_vat(tax=mock, syft_no_server=True)
    for fn in (sector_vat, raw_rows):
        client.code.request_code_execution(fn)
    print(json.dumps({"datasets": [d.name for d in client.datasets], "mock_columns": list(mock.columns),
                      "mock_rows": int(len(mock)), "mock_result": tried.to_dict(orient="list")}), flush=True)

    sys.stdin.readline()
    # the deposited result, from the function's output history (PySyft's record of released results)
    code = next(c for c in client.code.get_all() if c.service_func_name == "sector_vat")
    out = code.output_history[-1].outputs[0]
    got = out.get() if hasattr(out, "get") else out
    reasons = {}
    for req in client.requests:
        reasons[req.code.service_func_name] = {"status": str(req.status), "reason": str(req.deny_reason)}
    print(json.dumps({"sector_vat": got, "requests": reasons}, default=str), flush=True)


if __name__ == "__main__":
    main()
