from h2ochat.cli import main

main()
