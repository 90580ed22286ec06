"""One module per command's work (run, plan, demo), with its collaborators passed in."""
