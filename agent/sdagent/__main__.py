from sdagent.cli import main

main()
