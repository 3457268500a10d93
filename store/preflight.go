package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"syscall"
	"time"
)

// The layout of a bbolt meta page: a 16-byte page header, then the meta fields.
const (
	boltPageHeader = 16
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	boltMetaSize   = 64 // magic .. checksum
	boltNoFreelist = ^uint64(0)
)

// boltMeta is what preflight reads of a meta page.
type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// parseMeta decodes and validates the meta page whose page starts at buf[0].
func parseMeta(buf []byte) (boltMeta, bool) {
	if len(buf) < boltPageHeader+boltMetaSize {
		return boltMeta{}, false
	}
	m := buf[boltPageHeader : boltPageHeader+boltMetaSize]
	ne := binary.NativeEndian
	h := fnv.New64a()
	h.Write(m[:56])
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion || ne.Uint64(m[56:]) != h.Sum64() {
		return boltMeta{}, false
	}
	return boltMeta{
		pageSize: ne.Uint32(m[8:]),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		pgid:     ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}, true
}

// preflight checks an existing database file before bbolt maps it: bbolt trusts
// the file's meta page and faults (a crash no recover catches) on a file shorter
// than the meta page says, as a truncated copy is. It refuses an empty file (which
// bbolt would silently make a new, empty database of), a file without a valid meta
// page, and one shorter than its meta page says. It holds a shared lock on the
// file while it reads, so that a daemon's writes are not mistaken for damage: a
// file locked by another process for timeout gives ErrLocked.
func preflight(path string, timeout time.Duration) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("lock: %w", err)
		}
		if time.Now().After(deadline) {
			return ErrLocked
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)

	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size == 0 {
		return errors.New("the database file is empty (0 bytes): it is not made into a new database, so that no stored job is silently lost; move it away to start afresh")
	}
	var metas []boltMeta
	buf := make([]byte, 4096)
	n, _ := f.ReadAt(buf, 0)
	if m, ok := parseMeta(buf[:n]); ok {
		metas = append(metas, m)
	}
	// The second meta page is one page further; find the page size as bbolt does
	// when the first meta page is damaged, else take it from the first.
	offsets := []int64{}
	if len(metas) > 0 {
		offsets = append(offsets, int64(metas[0].pageSize))
	} else {
		for i := 0; i <= 14; i++ {
			offsets = append(offsets, int64(1024)<<i)
		}
	}
	for _, off := range offsets {
		if off >= size {
			break
		}
		n, _ := f.ReadAt(buf, off)
		if m, ok := parseMeta(buf[:n]); ok && int64(m.pageSize) == off {
			metas = append(metas, m)
			break
		}
	}
	if len(metas) == 0 {
		return errors.New("not a spool database: no valid meta page (the file is damaged or of another kind)")
	}
	// bbolt uses the valid meta page with the highest transaction id.
	m := metas[0]
	if len(metas) == 2 && metas[1].txid > m.txid {
		m = metas[1]
	}
	if m.pageSize < 1024 || m.pgid < 4 || m.root >= m.pgid || (m.freelist != boltNoFreelist && m.freelist >= m.pgid) {
		return fmt.Errorf("damaged database: meta page says page size %d, %d pages, root at %d, freelist at %d", m.pageSize, m.pgid, m.root, m.freelist)
	}
	if need := int64(m.pgid) * int64(m.pageSize); size < need {
		return fmt.Errorf("damaged database: the file is truncated: %d bytes, its meta page needs %d", size, need)
	}
	return nil
}
