// The `fanout` binary: every subcommand lives in src/cli/.
#include "cli/cli.h"

int main(int argc, char** argv) { return fanout::cli::Main(argc, argv); }
