// Command spool is the command line of spool: it submits jobs to spoold and lists,
// watches, waits for and manages them over the daemon's Unix socket.
package main

import (
	"context"
	"os"
)

// main runs the command line. Commands that wait catch SIGINT and SIGTERM (see
// command.waits); the others leave them to end the process.
func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}
