package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// checkSyntax runs shell -n on the script, or skips when the shell is missing.
func checkSyntax(t *testing.T, shell, script string) {
	t.Helper()
	path, err := exec.LookPath(shell)
	if err != nil {
		t.Skipf("%s is not installed here, so its script's syntax is not checked", shell)
	}
	file := filepath.Join(t.TempDir(), "completion")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, "-n", file).CombinedOutput()
	if err != nil {
		t.Fatalf("%s -n: %v\n%s", shell, err, out)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			is := is.New(t)
			r := spool(t, nil, "", "completion", shell)
			is.Equal(r.code, 0)                               // the script is printed
			is.True(strings.Contains(r.stdout, "__complete")) // commands, flags and ids come from spool __complete
			checkSyntax(t, shell, r.stdout)
		})
	}
}
