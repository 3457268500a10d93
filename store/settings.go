package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"spool/rpc"
)

// Queues reads every queue that has settings or unfinished jobs, in name order,
// with its settings and its numbers of queued and running jobs.
func (s *Store) Queues(ctx context.Context) ([]rpc.Queue, error) {
	qs := []rpc.Queue{}
	err := s.view(ctx, func(b *txb) error {
		sc, cc := b.queues.Cursor(), b.qcounts.Cursor()
		sk, sv := sc.First()
		ck, cv := cc.First()
		for sk != nil || ck != nil {
			var q rpc.Queue
			switch c := bytes.Compare(sk, ck); {
			case ck == nil || (sk != nil && c < 0):
				if err := json.Unmarshal(sv, &q); err != nil {
					return fmt.Errorf("decode queue %q: %w", sk, err)
				}
				sk, sv = sc.Next()
			case sk == nil || c > 0:
				q.Name = string(ck)
				q.Queued, q.Running = countsOf(cv)
				ck, cv = cc.Next()
			default:
				if err := json.Unmarshal(sv, &q); err != nil {
					return fmt.Errorf("decode queue %q: %w", sk, err)
				}
				q.Queued, q.Running = countsOf(cv)
				sk, sv = sc.Next()
				ck, cv = cc.Next()
			}
			qs = append(qs, q)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return qs, nil
}

// PutQueue stores a queue's settings (name, parallel, paused, on_finish), replacing the
// previous ones and keeping its counts.
func (s *Store) PutQueue(ctx context.Context, q rpc.Queue) error {
	if q.Name == "" {
		return rpc.InvalidParams("name", "must not be empty")
	}
	raw, err := json.Marshal(rpc.Queue{Name: q.Name, Parallel: q.Parallel, Paused: q.Paused, OnFinish: q.OnFinish})
	if err != nil {
		return rpc.Storage(fmt.Errorf("encode queue %q: %w", q.Name, err))
	}
	var o *op
	o = &op{weight: len(raw), apply: func(b *txb) error {
		if err := b.queues.Put([]byte(q.Name), raw); err != nil {
			return fmt.Errorf("put queue %q: %w", q.Name, err)
		}
		o.changed = true
		return nil
	}}
	return s.do(ctx, o)
}

// countsOf decodes a value of bQueueCounts.
func countsOf(v []byte) (queued, running int) {
	if len(v) != 16 {
		return 0, 0
	}
	return int(btoi(v[:8])), int(btoi(v[8:]))
}

// PutTemplate stores a template, replacing one of the same name.
func (s *Store) PutTemplate(ctx context.Context, t rpc.Template) error {
	if t.Name == "" {
		return rpc.InvalidParams("name", "must not be empty")
	}
	raw, err := json.Marshal(t)
	if err != nil {
		return rpc.InvalidParams("spec", "the template cannot be encoded: "+err.Error())
	}
	return s.do(ctx, &op{weight: len(raw), apply: func(b *txb) error {
		if err := b.templates.Put([]byte(t.Name), raw); err != nil {
			return fmt.Errorf("put template %q: %w", t.Name, err)
		}
		return nil
	}})
}

// Template reads a template; 1003 when unknown.
func (s *Store) Template(ctx context.Context, name string) (*rpc.Template, error) {
	var t *rpc.Template
	err := s.view(ctx, func(b *txb) error {
		raw := b.templates.Get([]byte(name))
		if raw == nil {
			return rpc.NoTemplate(name)
		}
		t = &rpc.Template{}
		if err := json.Unmarshal(raw, t); err != nil {
			return fmt.Errorf("decode template %q: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Templates reads every template in name order.
func (s *Store) Templates(ctx context.Context) ([]rpc.Template, error) {
	ts := []rpc.Template{}
	err := s.view(ctx, func(b *txb) error {
		return b.templates.ForEach(func(k, v []byte) error {
			var t rpc.Template
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode template %q: %w", k, err)
			}
			ts = append(ts, t)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return ts, nil
}

// RemoveTemplate removes a template; 1003 when unknown.
func (s *Store) RemoveTemplate(ctx context.Context, name string) error {
	return s.do(ctx, &op{weight: 64, apply: func(b *txb) error {
		if b.templates.Get([]byte(name)) == nil {
			return rpc.NoTemplate(name)
		}
		if err := b.templates.Delete([]byte(name)); err != nil {
			return fmt.Errorf("delete template %q: %w", name, err)
		}
		return nil
	}})
}
