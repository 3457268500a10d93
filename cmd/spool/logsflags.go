package main

import "github.com/spf13/pflag"

// logsFlags registers logs' --lines and --stderr.
func logsFlags(fs *pflag.FlagSet) (lines *int, stderr *bool) {
	lines = fs.IntP("lines", "n", 0, "print only the last `N` lines (as tail -n); with -f, follow from them")
	stderr = fs.Bool("stderr", false, "read the step's stderr alone (the log holds stdout and stderr merged)")
	return lines, stderr
}
