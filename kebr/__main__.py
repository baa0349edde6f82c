from kebr.cli import main

main()
