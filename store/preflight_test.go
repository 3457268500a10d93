package store_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
	"spool/store"
)

// filled makes a closed database with some hundred jobs and returns its path.
func filled(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spool.db")
	s, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for r := 0; r < 5; r++ {
		var news []rpc.NewJob
		for i := 0; i < 100; i++ {
			news = append(news, finalJob(fmt.Sprint(r, i, strings.Repeat("x", 500)), now))
		}
		if _, _, err := s.Submit(context.Background(), news); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenRefusesDamaged: a damaged database file is never opened as a new one,
// never crashes the process (bbolt faults on a truncated file), and is left
// byte for byte as it was.
func TestOpenRefusesDamaged(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"empty", func(t *testing.T, path string) { os.Truncate(path, 0) }, "empty"},
		{"truncated to a tenth", func(t *testing.T, path string) { truncateTo(t, path, 10) }, "truncated"},
		{"truncated to half", func(t *testing.T, path string) { truncateTo(t, path, 2) }, "truncated"},
		{"garbage", func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("garbage!"), 100000), 0o600)
		}, "no valid meta page"},
		{"root page overwritten", func(t *testing.T, path string) { smashPage(t, path, "root") }, "damaged"},
		{"freelist page overwritten", func(t *testing.T, path string) { smashPage(t, path, "freelist") }, "damaged"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			path := filled(t)
			c.damage(t, path)
			before, err := os.ReadFile(path)
			is.NoErr(err)
			s, err := store.Open(path, store.Options{})
			if err == nil {
				s.Close()
			}
			is.True(err != nil) // refused
			t.Logf("%v", err)
			is.True(strings.Contains(err.Error(), c.want)) // saying why
			after, err := os.ReadFile(path)
			is.NoErr(err)
			is.True(bytes.Equal(before, after)) // and the file is untouched
		})
	}
}

// truncateTo cuts the file to a div'th of the pages its first meta page names:
// the file itself is longer, as the store reserves room ahead of the data.
func truncateTo(t *testing.T, path string, div int64) {
	b := make([]byte, 4096)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(b, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	data := int64(ne.Uint32(b[16+8:])) * int64(ne.Uint64(b[16+40:]))
	if err := os.Truncate(path, data/div); err != nil {
		t.Fatal(err)
	}
}

// smashPage overwrites the page the newest meta page names as root or freelist.
func smashPage(t *testing.T, path, which string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	ps := int(ne.Uint32(b[16+8:]))
	meta := 16
	if ne.Uint64(b[ps+16+48:]) > ne.Uint64(b[16+48:]) {
		meta = ps + 16
	}
	off := 16
	if which == "freelist" {
		off = 32
	}
	pg := int(ne.Uint64(b[meta+off:]))
	for i := pg * ps; i < (pg+1)*ps; i++ {
		b[i] = 0xA5
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
