package daemon

import "spool/rpc"

// The daemon's watches let the server write what they hold in one go.
var _ rpc.BufferedWatcher = (*watcher)(nil)

// Buffered is how many events Next returns without waiting: those it fetched
// already. The server writes them together.
func (w *watcher) Buffered() int { return len(w.batch) - w.pos }
