"""One module per `rrnx` sub-command. Each defines NAME, HELP, add_arguments(parser) and
run(args, overrides) -> int; rrnx.cli discovers them, so adding a command touches no other file."""

ALLOW_DATA_CHANGE_HELP = ("use the data even if it differs from the fingerprint the run recorded "
                          "(results then describe the new data, not the run's)")
