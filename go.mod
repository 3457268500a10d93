module spool

go 1.26.0

require (
	github.com/matryer/is v1.4.1
	github.com/oklog/run v1.2.0
	github.com/sourcegraph/jsonrpc2 v0.2.3
	go.etcd.io/bbolt v1.4.3
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)
