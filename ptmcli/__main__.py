from ptmcli.cli.main import main

main()
