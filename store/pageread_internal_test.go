package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/matryer/is"
	"go.etcd.io/bbolt"
)

// pageLookup is what pageFile.get answered for one key.
type pageLookup struct {
	val       []byte
	found, ok bool
}

// lookup asks pf for key in bucket name of a read transaction of db, copying the
// value out.
func lookup(t *testing.T, db *bbolt.DB, pf *pageFile, name string, key []byte) (pageLookup, []byte) {
	t.Helper()
	var got pageLookup
	var want []byte
	err := db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket([]byte(name))
		if v := bk.Get(key); v != nil {
			want = append([]byte{}, v...)
		}
		var err error
		got.found, got.ok, err = pf.get(tx, bk, key, func(v []byte) error {
			got.val = append([]byte{}, v...)
			return nil
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, want
}

// treeDepth is the depth of bucket name's tree.
func treeDepth(t *testing.T, db *bbolt.DB, name string) int {
	t.Helper()
	var d int
	if err := db.View(func(tx *bbolt.Tx) error {
		d = tx.Bucket([]byte(name)).Stats().Depth
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPageFileAgreesWithBolt(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "pages.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoSync: true})
	is.NoErr(err) // opens
	defer db.Close()
	pf, err := openPageFile(path, db.Info().PageSize)
	is.NoErr(err) // opens the file for reading
	defer pf.close()

	// Long keys make narrow branch pages, hence a deep tree from few keys;
	// keys that are prefixes of others, values of every size up to several
	// pages, and a nested bucket exercise the rest of the format.
	rng := rand.New(rand.NewPCG(7, 8))
	keys := map[string][]byte{}
	key := func(i int) []byte {
		k := bytes.Repeat([]byte{'k'}, 150+i%7)
		return binary.BigEndian.AppendUint32(k, uint32(i)*2)
	}
	value := func(i int) []byte {
		n := rng.IntN(600)
		switch i % 97 {
		case 0:
			n = 3*db.Info().PageSize + rng.IntN(5000) // overflow pages
		case 1:
			n = 0
		}
		v := make([]byte, n)
		for j := range v {
			v[j] = byte(rng.IntN(256))
		}
		return v
	}
	const n = 6000
	for start := 0; start < n; start += 1000 {
		is.NoErr(db.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("big"))
			if err != nil {
				return err
			}
			for i := start; i < start+1000; i++ {
				k, v := key(i), value(i)
				keys[string(k)] = v
				if err := bk.Put(k, v); err != nil {
					return err
				}
				if i%10 == 0 {
					p := k[:100+i%40] // a prefix of a key
					keys[string(p)] = []byte("prefix")
					if err := bk.Put(p, []byte("prefix")); err != nil {
						return err
					}
				}
			}
			if _, err := bk.CreateBucketIfNotExists([]byte("nested")); err != nil {
				return err
			}
			small, err := tx.CreateBucketIfNotExists([]byte("small"))
			if err != nil {
				return err
			}
			return small.Put([]byte("a"), []byte("b"))
		})) // filled
	}
	// Deletions make bbolt merge and rewrite pages.
	is.NoErr(db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket([]byte("big"))
		for i := 0; i < n; i += 3 {
			delete(keys, string(key(i)))
			if err := bk.Delete(key(i)); err != nil {
				return err
			}
		}
		return nil
	})) // deleted a third
	is.True(treeDepth(t, db, "big") >= 3) // branches of branches are exercised

	check := func(k []byte, present bool) {
		t.Helper()
		got, want := lookup(t, db, pf, "big", k)
		if !got.ok {
			t.Fatalf("key %q: the page reader gave up on a plain bucket", k)
		}
		if got.found != present || !bytes.Equal(got.val, want) || (present && !bytes.Equal(got.val, keys[string(k)])) {
			t.Fatalf("key %q: found %v, %d bytes; bbolt has %d bytes, stored %v", k, got.found, len(got.val), len(want), present)
		}
	}
	for k := range keys {
		check([]byte(k), true)
	}
	for i := range n {
		_, present := keys[string(key(i))]
		check(key(i), present)                                                             // every key, deleted or not
		check(append(key(i), 0), false)                                                    // just after a key
		check(key(i)[:len(key(i))-1], false)                                               // a prefix of a key
		check(binary.BigEndian.AppendUint32(key(i)[:len(key(i))-4], uint32(i)*2+1), false) // between keys
	}
	check(nil, false)
	check([]byte{0}, false)
	check(bytes.Repeat([]byte{0xff}, 300), false)

	got, _ := lookup(t, db, pf, "big", []byte("nested"))
	is.True(got.ok)     // a nested bucket's key is answered
	is.True(!got.found) // as bbolt does: it is not a value

	got, _ = lookup(t, db, pf, "small", []byte("a"))
	is.True(!got.ok) // an inline bucket is left to bbolt

	is.NoErr(db.Update(func(tx *bbolt.Tx) error {
		_, ok, err := pf.get(tx, tx.Bucket([]byte("big")), key(1), func([]byte) error { return nil })
		is.True(!ok) // a write transaction is left to bbolt
		return err
	}))
}

func TestPageFileDecodeErrorIsReturned(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "pages.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoSync: true})
	is.NoErr(err) // opens
	defer db.Close()
	pf, err := openPageFile(path, db.Info().PageSize)
	is.NoErr(err) // opens the file for reading
	defer pf.close()
	is.NoErr(db.Update(func(tx *bbolt.Tx) error {
		bk, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		for i := range 500 {
			if err := bk.Put(itob(int64(i)), bytes.Repeat([]byte{'v'}, 100)); err != nil {
				return err
			}
		}
		return nil
	})) // filled
	boom := fmt.Errorf("boom")
	is.NoErr(db.View(func(tx *bbolt.Tx) error {
		found, ok, err := pf.get(tx, tx.Bucket([]byte("b")), itob(7), func([]byte) error { return boom })
		is.True(found && ok) // answered
		is.Equal(err, boom)  // with the callback's error
		return nil
	}))
}
