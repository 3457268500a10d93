package httpapi

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// MinTokenLen is the shortest token accepted, in bytes.
const MinTokenLen = 16

// ReadTokenFile reads the tokens of a token file. The file must be a regular file
// of this process's uid with mode 0600 (or 0400): the daemon refuses a looser one.
// Each line that is neither empty nor a comment (#) is a token, alone (read-write)
// or after a scope word: "write TOKEN" or "read TOKEN". A token is at least
// MinTokenLen bytes with no white space.
func ReadTokenFile(path string) ([]Token, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("token file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("token file %s has mode %04o: others may read it; chmod 600 it", path, uint32(perm))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return nil, fmt.Errorf("token file %s is owned by uid %d, not by us (uid %d)", path, st.Uid, os.Getuid())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	var out []Token
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		t := Token{Scope: ScopeWrite}
		switch {
		case len(fields) == 1:
			t.Secret = fields[0]
		case len(fields) == 2 && fields[0] == "write":
			t.Secret = fields[1]
		case len(fields) == 2 && fields[0] == "read":
			t.Scope, t.Secret = ScopeRead, fields[1]
		default:
			return nil, fmt.Errorf("token file %s, line %d: want TOKEN, \"write TOKEN\" or \"read TOKEN\"", path, n)
		}
		if len(t.Secret) < MinTokenLen {
			return nil, fmt.Errorf("token file %s, line %d: a token must be at least %d bytes (make one with: head -c 32 /dev/urandom | base64)", path, n, MinTokenLen)
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("token file %s holds no token", path)
	}
	return out, nil
}

// EnsureTokenFile returns the tokens of the file at path, first writing one new
// read-write token there (mode 0600) when there is no file. It is what spoold
// does on loopback without --http-token-file: the token is as private as the
// state folder the file is in, as the socket is private to its user.
func EnsureTokenFile(path string) ([]Token, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("make a token: %w", err)
		}
		tok := base64.RawURLEncoding.EncodeToString(b[:])
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("write the token file: %w", err)
		}
		_, werr := f.WriteString(tok + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return nil, fmt.Errorf("write the token file: %w", werr)
		}
	}
	return ReadTokenFile(path)
}
