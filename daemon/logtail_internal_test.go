package daemon

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/matryer/is"
)

// countingReader counts the bytes read through it and the lowest offset read.
type countingReader struct {
	r      io.ReaderAt
	read   atomic.Int64
	lowest atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.read.Add(int64(n))
	for {
		low := c.lowest.Load()
		if off >= low || c.lowest.CompareAndSwap(low, off) {
			break
		}
	}
	return n, err
}

// naiveTail is what tail -n prints of data, the slow way.
func naiveTail(data []byte, n int) []byte {
	body := data
	trailing := len(body) > 0 && body[len(body)-1] == '\n'
	if trailing {
		body = body[:len(body)-1]
	}
	lines := bytes.Split(body, []byte("\n"))
	if len(body) == 0 {
		lines = nil
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := bytes.Join(lines, []byte("\n"))
	if trailing && (len(lines) > 0 || len(data) > 0) {
		out = append(out, '\n')
	}
	return out
}

// TestTailStartOnALargeLog finds the last lines of a 24 MiB log on disk, as
// tail -n does, and reads only its end: a chunk or two, not the file.
func TestTailStartOnALargeLog(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "0.log")
	f, err := os.Create(path)
	is.NoErr(err)
	var b bytes.Buffer
	for i := 1; b.Len() < 24<<20; i++ {
		fmt.Fprintf(&b, "line %d %s\n", i, strings.Repeat("x", i%200))
	}
	_, err = f.Write(b.Bytes())
	is.NoErr(err)
	is.NoErr(f.Close())
	data := b.Bytes()

	f, err = os.Open(path)
	is.NoErr(err)
	defer f.Close()
	for _, n := range []int{1, 3, 100, 1000} {
		cr := &countingReader{r: f}
		cr.lowest.Store(int64(len(data)))
		start, err := tailStart(cr, int64(len(data)), n)
		is.NoErr(err)
		is.Equal(string(data[start:]), string(naiveTail(data, n))) // the last n lines
		want := int64(n*210 + tailChunk)                           // lines are at most ~210 bytes
		is.True(cr.read.Load() <= want)                            // only the end was read
		is.True(cr.lowest.Load() >= int64(len(data))-want)         // from the end
	}
}

// TestTailStartCases: trailing newline or not, fewer lines than asked, empty
// lines, a last line longer than a chunk, an empty log.
func TestTailStartCases(t *testing.T) {
	long := strings.Repeat("y", 3*tailChunk+5)
	for _, c := range []struct {
		data string
		n    int
	}{
		{"", 3},
		{"\n", 1},
		{"\n\n\n", 2},
		{"a\nb\nc\nd\n", 3},
		{"a\nb\nc\nd", 3},
		{"a\nb\n", 5},
		{"a\n\nb\n\n", 2},
		{"only", 1},
		{"first\n" + long + "\n", 1},
		{"first\n" + long, 2},
		{"first\n" + long + "\nlast", 2},
		{strings.Repeat("z\n", tailChunk), tailChunk/2 + 7},
	} {
		name := fmt.Sprintf("%.12q/%d", c.data, c.n)
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			r := strings.NewReader(c.data)
			start, err := tailStart(r, int64(len(c.data)), c.n)
			is.NoErr(err)
			is.Equal(c.data[start:], string(naiveTail([]byte(c.data), c.n))) // as tail -n
		})
	}
}
