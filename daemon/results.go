package daemon

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// folderPool hands out the jobs' results folders. Making a folder and removing
// it again for every job is dear on ext4: with thousands of folders removed in
// the last seconds, each new one scans past them for a free inode (16% of the
// daemon's CPU for 1,000 `true` jobs, in recently_deleted and the bitmap reads
// under it). Empty folders are kept instead, in free/, and renamed into place.
type folderPool struct {
	dir  string // the results folder; free/ is under it
	mu   sync.Mutex
	free []string // names in free/
	next int
}

// maxFreeFolders is how many empty results folders are kept for reuse.
const maxFreeFolders = 64

// newFolderPool reads the free folders an earlier run left.
func newFolderPool(dir string) (*folderPool, error) {
	p := &folderPool{dir: dir}
	free := filepath.Join(dir, "free")
	if err := os.Mkdir(free, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", free, err)
	}
	ents, err := os.ReadDir(free)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", free, err)
	}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		p.free = append(p.free, e.Name())
		p.next = max(p.next, n+1)
	}
	return p, nil
}

// make makes path, the results folder of a job, empty and 0700, unless it is
// there already (a job of several steps, or one that resumes).
func (p *folderPool) make(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	p.mu.Lock()
	var name string
	if n := len(p.free); n > 0 {
		name = p.free[n-1]
		p.free = p.free[:n-1]
	}
	p.mu.Unlock()
	if name != "" {
		if err := os.Rename(filepath.Join(p.dir, "free", name), path); err == nil {
			return nil
		}
	}
	if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create results folder: %w", err)
	}
	return nil
}

// release takes back a job's results folder when it is empty; one that holds
// what the job left stays until the job is removed.
func (p *folderPool) release(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	_, err = f.Readdirnames(1)
	f.Close()
	if !errors.Is(err, io.EOF) {
		return // not empty, or unreadable: it stays
	}
	p.mu.Lock()
	if len(p.free) >= maxFreeFolders {
		p.mu.Unlock()
		_ = os.Remove(path)
		return
	}
	name := strconv.Itoa(p.next)
	p.next++
	p.mu.Unlock()
	if err := os.Rename(path, filepath.Join(p.dir, "free", name)); err != nil {
		_ = os.Remove(path)
		return
	}
	p.mu.Lock()
	p.free = append(p.free, name)
	p.mu.Unlock()
}
