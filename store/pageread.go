package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"go.etcd.io/bbolt"
)

// A read of one job by id (Get) lands on random pages of a big database. Through
// bbolt's map, each such page costs a page fault, and the kernel maps the page's
// neighbours with it: the process's resident memory grows by tens of KiB per read,
// and on a virtual machine a fault costs tens of microseconds. pageFile instead
// looks a key up in a bucket by reading the bucket's pages from the file with
// pread(2), which copies a page from the page cache in a few microseconds and maps
// nothing.
//
// It reads bbolt's file format (version 2, stable since boltdb): a page starts
// with a 16-byte header (id uint64, flags uint16, count uint16, overflow uint32),
// followed by count 16-byte elements, in the machine's byte order. A branch
// element is (pos uint32, ksize uint32, child pgid uint64), a leaf element
// (flags uint32, pos uint32, ksize uint32, vsize uint32); pos counts from the
// element itself, and a leaf's value follows its key. A page with overflow n
// spans n+1 pages.
//
// It runs only inside a read transaction, which keeps every page reachable from
// the transaction's roots as it is: bbolt reuses a page only once no open
// transaction can reach it, and writes through the same page cache that pread
// reads. Whatever it does not recognise (an inline bucket, a page whose header
// does not match) it leaves to bbolt: the answer is then bbolt's own.

// Page layout of bbolt's file format.
const (
	pageHeaderSize  = 16
	pageElementSize = 16
	branchPageFlag  = 0x01
	leafPageFlag    = 0x02
	bucketLeafFlag  = 0x01
	// maxTreeDepth bounds a descent: a tree of this depth would hold far more
	// keys than a file can.
	maxTreeDepth = 32
	// maxPooledPage is the largest buffer kept for reuse.
	maxPooledPage = 1 << 20
)

// pageFile reads pages of the database file with pread.
type pageFile struct {
	f        *os.File
	pageSize int
	bufs     sync.Pool // *[]byte
}

// openPageFile opens the database file at path for reading its pages.
func openPageFile(path string, pageSize int) (*pageFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open database file for reading: %w", err)
	}
	return &pageFile{f: f, pageSize: pageSize}, nil
}

// close closes the file.
func (pf *pageFile) close() error { return pf.f.Close() }

// get looks key up in bkt of the read transaction tx and calls fn with its value,
// which fn must not keep. found says whether the key is there; ok is false when
// pf cannot tell, and the caller must ask bkt.Get.
func (pf *pageFile) get(tx *bbolt.Tx, bkt *bbolt.Bucket, key []byte, fn func(v []byte) error) (found, ok bool, err error) {
	if tx.Writable() {
		// A write transaction's changes are in memory, not in the file.
		return false, false, nil
	}
	pgid := uint64(bkt.Root())
	if pgid == 0 {
		return false, false, nil // an inline bucket: its page is in its parent
	}
	pages := uint64(tx.Size()) / uint64(pf.pageSize)
	bp := pf.buffer()
	defer pf.release(bp)
	for range maxTreeDepth {
		page, ok := pf.read(bp, pgid, pages)
		if !ok {
			return false, false, nil
		}
		flags := binary.NativeEndian.Uint16(page[8:])
		count := int(binary.NativeEndian.Uint16(page[10:]))
		if count == 0 || pageHeaderSize+count*pageElementSize > len(page) {
			return false, false, nil
		}
		switch flags {
		case branchPageFlag:
			// The last child whose first key is at most key.
			i, exact, ok := search(page, count, 0, key)
			if !ok {
				return false, false, nil
			}
			if !exact && i > 0 {
				i--
			}
			pgid = binary.NativeEndian.Uint64(page[pageHeaderSize+i*pageElementSize+8:])
		case leafPageFlag:
			i, exact, ok := search(page, count, 4, key)
			if !ok {
				return false, false, nil
			}
			if !exact {
				return false, true, nil
			}
			e := pageHeaderSize + i*pageElementSize
			if binary.NativeEndian.Uint32(page[e:])&bucketLeafFlag != 0 {
				return false, true, nil // a nested bucket, not a value
			}
			start := e + int(binary.NativeEndian.Uint32(page[e+4:])) + int(binary.NativeEndian.Uint32(page[e+8:]))
			end := start + int(binary.NativeEndian.Uint32(page[e+12:]))
			if start < e || end < start || end > len(page) {
				return false, false, nil
			}
			return true, true, fn(page[start:end])
		default:
			return false, false, nil
		}
	}
	return false, false, nil
}

// search finds, among the count elements of page, the first whose key is not less
// than key, and whether it equals key. posAt is the offset of pos in an element (0
// in a branch, 4 in a leaf); ksize follows pos. ok is false when a key lies
// outside the page.
func search(page []byte, count, posAt int, key []byte) (i int, exact, ok bool) {
	lo, hi := 0, count
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		k, ok := elementKey(page, mid, posAt)
		if !ok {
			return 0, false, false
		}
		c := bytes.Compare(k, key)
		if c == 0 {
			return mid, true, true
		}
		if c < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, false, true
}

// elementKey is the key of element i of page.
func elementKey(page []byte, i, posAt int) ([]byte, bool) {
	e := pageHeaderSize + i*pageElementSize
	start := e + int(binary.NativeEndian.Uint32(page[e+posAt:]))
	end := start + int(binary.NativeEndian.Uint32(page[e+posAt+4:]))
	if start < e || end < start || end > len(page) {
		return nil, false
	}
	return page[start:end], true
}

// read reads page pgid with its overflow into *bp, checking that it is one of the
// transaction's pages and carries its own id.
func (pf *pageFile) read(bp *[]byte, pgid, pages uint64) ([]byte, bool) {
	if pgid < 2 || pgid >= pages { // pages 0 and 1 are bbolt's meta pages
		return nil, false
	}
	size := pf.pageSize
	buf := (*bp)[:size]
	if _, err := pf.f.ReadAt(buf, int64(pgid)*int64(size)); err != nil {
		return nil, false
	}
	if binary.NativeEndian.Uint64(buf) != pgid {
		return nil, false
	}
	if over := uint64(binary.NativeEndian.Uint32(buf[12:])); over > 0 {
		if over >= pages-pgid {
			return nil, false
		}
		total := int(over+1) * size
		if cap(*bp) < total {
			grown := make([]byte, total)
			copy(grown, buf)
			*bp = grown
		}
		buf = (*bp)[:total]
		if _, err := pf.f.ReadAt(buf[size:], int64(pgid)*int64(size)+int64(size)); err != nil {
			return nil, false
		}
	}
	return buf, true
}

// buffer takes a page buffer from the pool.
func (pf *pageFile) buffer() *[]byte {
	if bp, ok := pf.bufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, pf.pageSize)
	return &b
}

// release gives a buffer back to the pool, unless it grew too big to keep.
func (pf *pageFile) release(bp *[]byte) {
	if cap(*bp) <= maxPooledPage {
		pf.bufs.Put(bp)
	}
}
