package daemon

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"spool/rpc"
)

// stderrLogPath is the log of a step's stderr alone, beside its merged log. Like
// the merged log, it is made at the first byte written: a step that writes
// nothing on stderr has none, which reads as an empty log.
func (d *Daemon) stderrLogPath(id int64, step int) string {
	return filepath.Join(d.jobLogDir(id), strconv.Itoa(step)+".stderr.log")
}

// streamLogPath is the file job.logs reads for a stream.
func (d *Daemon) streamLogPath(id int64, step int, stream string) string {
	if stream == rpc.StreamStderr {
		return d.stderrLogPath(id, step)
	}
	return d.logPath(id, step)
}

// newStderrLog is the writer of a step's stderr log. prefix, if any, is written
// before the first bytes of this attempt (the attempt's marker), so that a
// stderr log that holds several attempts tells them apart and an attempt that
// writes nothing on stderr adds nothing, not even the file.
func (d *Daemon) newStderrLog(id int64, step int, prefix string) *logWriter {
	w := &logWriter{d: d, id: id, step: step, max: d.cfg.MaxLog, path: d.stderrLogPath(id, step)}
	if prefix != "" {
		w.prefix = []byte(prefix)
	}
	return w
}

// tailChunk is how much of a log tailStart reads at a time, from its end.
const tailChunk = 64 << 10

// tailStart is the offset where the last n lines of a log of size bytes begin,
// as tail -n counts them: a newline ends a line, and bytes after the last
// newline are a line too. It reads the log backwards from its end, tailChunk
// bytes at a time, and stops at the n-th newline before the last line: it reads
// only the end of a large log. A log with fewer lines starts at 0.
func tailStart(r io.ReaderAt, size int64, n int) (int64, error) {
	if n <= 0 || size <= 0 {
		return size, nil
	}
	buf := make([]byte, min(size, tailChunk))
	end := size
	// The newline that ends the last line does not start a line after it.
	skipLast := true
	for end > 0 {
		start := max(end-int64(len(buf)), 0)
		chunk := buf[:end-start]
		if _, err := r.ReadAt(chunk, start); err != nil && err != io.EOF {
			return 0, fmt.Errorf("read step log: %w", err)
		}
		if skipLast {
			skipLast = false
			if chunk[len(chunk)-1] == '\n' {
				chunk = chunk[:len(chunk)-1]
			}
		}
		for len(chunk) > 0 {
			i := bytes.LastIndexByte(chunk, '\n')
			if i < 0 {
				break
			}
			n--
			if n == 0 {
				return start + int64(i) + 1, nil
			}
			chunk = chunk[:i]
		}
		end = start
	}
	return 0, nil
}
