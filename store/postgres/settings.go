package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"spool/rpc"
)

// Queues reads every queue that has settings or ever had jobs, in name order,
// with its settings and its numbers of queued and running jobs, counted
// across the cluster.
func (s *Store) Queues(ctx context.Context) ([]rpc.Queue, error) {
	rows, err := s.pool.Query(ctx, `SELECT q.name, q.settings,
			(SELECT count(*) FROM spool_jobs j WHERE j.queue = q.name AND j.state = 'queued'),
			(SELECT count(*) FROM spool_jobs j WHERE j.queue = q.name AND j.state = 'running')
		FROM spool_queues q ORDER BY q.name`)
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read queues: %w", err))
	}
	defer rows.Close()
	qs := []rpc.Queue{}
	for rows.Next() {
		var name string
		var raw []byte
		var queued, running int
		if err := rows.Scan(&name, &raw, &queued, &running); err != nil {
			return nil, rpc.Storage(fmt.Errorf("read queues: %w", err))
		}
		q := rpc.Queue{Name: name}
		if raw != nil {
			if err := json.Unmarshal(raw, &q); err != nil {
				return nil, rpc.Storage(fmt.Errorf("decode queue %q: %w", name, err))
			}
		}
		q.Queued, q.Running = queued, running
		qs = append(qs, q)
	}
	if err := rows.Err(); err != nil {
		return nil, rpc.Storage(fmt.Errorf("read queues: %w", err))
	}
	return qs, nil
}

// PutQueue stores a queue's settings (name, parallel, paused, on_finish),
// replacing the previous ones.
func (s *Store) PutQueue(ctx context.Context, q rpc.Queue) error {
	if q.Name == "" {
		return rpc.InvalidParams("name", "must not be empty")
	}
	raw, err := json.Marshal(rpc.Queue{Name: q.Name, Parallel: q.Parallel, Paused: q.Paused, OnFinish: q.OnFinish})
	if err != nil {
		return rpc.Storage(fmt.Errorf("encode queue %q: %w", q.Name, err))
	}
	if _, err := s.pool.Exec(ctx, "INSERT INTO spool_queues (name, settings) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET settings = excluded.settings", q.Name, raw); err != nil {
		return rpc.Storage(fmt.Errorf("put queue %q: %w", q.Name, err))
	}
	s.knowQueues(map[string]bool{q.Name: true})
	s.committed()
	return nil
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
	if _, err := s.pool.Exec(ctx, "INSERT INTO spool_templates (name, body) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET body = excluded.body", t.Name, raw); err != nil {
		return rpc.Storage(fmt.Errorf("put template %q: %w", t.Name, err))
	}
	return nil
}

// Template reads a template; 1003 when unknown.
func (s *Store) Template(ctx context.Context, name string) (*rpc.Template, error) {
	t, err := readTemplate(ctx, s.pool, name)
	if err != nil {
		if _, ok := err.(*rpc.Error); ok {
			return nil, err
		}
		return nil, rpc.Storage(err)
	}
	return t, nil
}

// Templates reads every template in name order.
func (s *Store) Templates(ctx context.Context) ([]rpc.Template, error) {
	rows, err := s.pool.Query(ctx, "SELECT name, body FROM spool_templates ORDER BY name")
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read templates: %w", err))
	}
	defer rows.Close()
	ts := []rpc.Template{}
	for rows.Next() {
		var name string
		var raw []byte
		if err := rows.Scan(&name, &raw); err != nil {
			return nil, rpc.Storage(fmt.Errorf("read templates: %w", err))
		}
		var t rpc.Template
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, rpc.Storage(fmt.Errorf("decode template %q: %w", name, err))
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, rpc.Storage(fmt.Errorf("read templates: %w", err))
	}
	return ts, nil
}

// RemoveTemplate removes a template; 1003 when unknown.
func (s *Store) RemoveTemplate(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM spool_templates WHERE name = $1", name)
	if err != nil {
		return rpc.Storage(fmt.Errorf("remove template %q: %w", name, err))
	}
	if tag.RowsAffected() == 0 {
		return rpc.NoTemplate(name)
	}
	return nil
}
