package main

import (
	"strings"
	"testing"

	"github.com/matryer/is"
)

func TestSummarize(t *testing.T) {
	is := is.New(t)
	in := `{"Action":"run","Package":"spool/cmd/spoold","Test":"TestTmux"}
{"Action":"output","Package":"spool/cmd/spoold","Test":"TestTmux","Output":"=== RUN   TestTmux\n"}
{"Action":"output","Package":"spool/cmd/spoold","Test":"TestTmux","Output":"    terminal_test.go:30: tmux is not installed\n"}
{"Action":"output","Package":"spool/cmd/spoold","Test":"TestTmux","Output":"--- SKIP: TestTmux (0.00s)\n"}
{"Action":"skip","Package":"spool/cmd/spoold","Test":"TestTmux"}
{"Action":"output","Package":"spool/cmd/spoold","Test":"TestBad","Output":"    x_test.go:9: boom\n"}
{"Action":"fail","Package":"spool/cmd/spoold","Test":"TestBad"}
{"Action":"output","Package":"spool/cmd/spoold","Test":"TestGood","Output":"    quiet\n"}
{"Action":"pass","Package":"spool/cmd/spoold","Test":"TestGood"}
{"Action":"output","Package":"spool/cmd/spoold","Output":"FAIL\tspool/cmd/spoold\t1.0s\n"}
not json: a build error
`
	var out strings.Builder
	skips, err := summarize(strings.NewReader(in), &out)
	is.NoErr(err)
	is.Equal(len(skips), 1)                                  // one test skipped
	is.Equal(skips[0].test, "TestTmux")                      // this one
	is.Equal(skips[0].reason, "tmux is not installed")       // with the reason it logged
	is.True(strings.Contains(out.String(), "boom"))          // a failed test's output is shown
	is.True(!strings.Contains(out.String(), "quiet"))        // a passing test's is not
	is.True(strings.Contains(out.String(), "FAIL\tspool"))   // and the package results
	is.True(strings.Contains(out.String(), "a build error")) // and lines that are not JSON pass through
	var sum strings.Builder
	printSkips(&sum, skips)
	is.Equal(sum.String(), "\nskipped tests: 1\n  cmd/spoold TestTmux: tmux is not installed\n") // the summary
}
