from coun_tui.cli import main

main()
