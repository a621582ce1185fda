"""The node's extract streamed from SQLite and checked while it is written (issue #19 item 4): the same
file pandas wrote, and each cell problem a SecretFlow party would refuse — an empty or repeated key, a
gap or text in a feature, a label other than 0/1 — refused by the node with the party's own words,
so the party reads only the header (``PartySpec.checked_rows``)."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from conftest import upload

from nodes.services.datasets import ExtractCheck, ExtractRefused
from protocols.secretflow.inputs import InputInvalidError, validate_input
from protocols.secretflow.spec import ClusterSpec, PartyConfig, PartyEndpoint, PartySpec

ROWS = (
    "uscc,vat,employees,active,grade,default\n"
    "91A,0.1,3,true,1.5,0\n"
    "91B,1e-05,,false,2,1\n"
    "91C,12345678.25,7,true,3,0\n"
)


@pytest.fixture
def ds(client):
    assert upload(client, "t", ROWS.encode(), key_column="uscc").status_code == 201
    return client.app.state.ctx.datasets


def test_streamed_extract_writes_what_pandas_wrote(ds, tmp_path) -> None:
    cols = ["uscc", "vat", "employees", "active", "grade"]
    dest = tmp_path / "x.csv"
    assert ds.extract_csv("t", cols, dest, check=ExtractCheck(key="uscc", numeric=("vat", "grade"))) == 3
    # what the pandas path wrote: floats by repr, ints without .0, NULL empty, booleans True/False
    frame = ds.read_frame("t", cols)
    frame["vat"] = frame["vat"].astype(float)
    frame["employees"] = pd.array(list(frame["employees"]), dtype="Int64")
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    assert dest.read_text() == buf.getvalue()


@pytest.mark.parametrize(("rows", "check", "said"), [
    ("91A,1,0\n91B,2,1\n91A,3,0\n", ExtractCheck("uscc", ("vat",)), "join key 'uscc' has 1 duplicate values, e.g. '91A'"),
    ("91A,1,0\n,2,1\n", ExtractCheck("uscc", ("vat",)), "join key 'uscc' has empty values"),
    ("91A,1,0\n91B,,1\n", ExtractCheck("uscc", ("vat",)), "feature column 'vat' has missing values"),
    ("91A,1,0\n91B,2,2\n", ExtractCheck("uscc", ("vat",), label="default"), "label column 'default' must be 0/1"),
    ("91A,1,0\n91B,2,1\n", ExtractCheck("uscc", ("uscc_x",)), "feature columns missing: ['uscc_x']"),
])
def test_what_a_party_refuses_is_refused_while_writing(client, tmp_path, rows, check, said) -> None:
    assert upload(client, "bad", ("uscc,vat,default\n" + rows).encode(), key_column="uscc").status_code == 201
    ds = client.app.state.ctx.datasets
    with pytest.raises(ExtractRefused, match=f"^{re.escape(said)}"):
        ds.extract_csv("bad", ["uscc", "vat", "default"], tmp_path / "x.csv", check=check)
    # without a check the same extract is written (the party would check it)
    assert ds.extract_csv("bad", ["uscc", "vat", "default"], tmp_path / "y.csv") == rows.count("\n")


def test_text_features_count_as_numbers_only_if_pandas_would_read_them_so(client, tmp_path) -> None:
    assert upload(client, "txt", b"uscc,code\n91A,12\n91B,3.5\n", key_column="uscc",
                  ).status_code == 201
    ds = client.app.state.ctx.datasets
    assert ds.extract_csv("txt", ["uscc", "code"], tmp_path / "a.csv", check=ExtractCheck("uscc", ("code",))) == 2
    assert upload(client, "txt2", b"uscc,code\n91A,12\n91B,X7\n", key_column="uscc").status_code == 201
    with pytest.raises(ExtractRefused, match="feature column 'code' is not numeric"):
        ds.extract_csv("txt2", ["uscc", "code"], tmp_path / "b.csv", check=ExtractCheck("uscc", ("code",)))


def _cfg(tmp_path, path, features, checked):  # noqa: ANN001, ANN202
    eps = [PartyEndpoint(name=n, sf_port=1000 + i, spu_port=2000 + i, psi_ports={o: 3000 + i for o in "ab" if o != n})
           for i, n in enumerate("ab")]
    return PartyConfig(job_id="j", cluster=ClusterSpec(parties=eps), join_key="uscc", label_party="a",
                       stages=["psi"], me=PartySpec(name="b", input_csv=path, output_dir=tmp_path / "out",
                                                    features=features, checked_rows=checked))


def test_a_node_checked_input_is_not_read_again_but_its_header_is(tmp_path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("uscc,vat\n91A,1\n91A,\n")  # cells a party would refuse: the node vouches for them
    assert validate_input(_cfg(tmp_path, path, ["vat"], 7)) == 7  # the node's count, no re-read
    with pytest.raises(InputInvalidError, match="2 duplicate|1 duplicate"):
        validate_input(_cfg(tmp_path, path, ["vat"], None))  # unchecked: the party reads every cell
    with pytest.raises(InputInvalidError, match=r"feature columns missing: \['x'\]"):
        validate_input(_cfg(tmp_path, path, ["x"], 7))  # the header is still the party's to check
