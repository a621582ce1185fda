from dcp.cli import main

main()
