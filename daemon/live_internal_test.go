package daemon

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/matryer/is"
)

// TestLastLineKeepsCharactersWhole: the heartbeat's last line and the line under
// way never start or end inside a character, however the output is cut.
func TestLastLineKeepsCharactersWhole(t *testing.T) {
	is := is.New(t)
	d := &Daemon{clock: SystemClock{}}
	d.hub = newHub(d)
	l := &liveState{d: d}
	long := strings.Repeat("€", 400) // 1,200 bytes, longer than what is kept
	text := []byte(long + "\n" + long)
	for i := 0; i < len(text); i += 7 { // cut everywhere, mostly inside characters
		l.output(int64(i), text[i:min(i+7, len(text))])
		_, line := l.snapshot()
		is.True(utf8.ValidString(line))                              // the last line is whole characters
		is.True(len(l.partial) == 0 || utf8.RuneStart(l.partial[0])) // the line under way starts on a character
	}
	_, line := l.snapshot()
	is.True(len(line) > 0 && len(line) <= 512) // the last line, cut to its cap
	is.True(strings.Trim(line, "€") == "")     // on a character boundary
	is.True(len(l.carry) == 0)                 // the text ended on a whole character
}
