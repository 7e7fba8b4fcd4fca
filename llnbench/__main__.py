from llnbench.cli import main

main()
