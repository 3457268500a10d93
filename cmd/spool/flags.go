package main

import (
	"fmt"
	"strconv"
	"strings"

	"spool/rpc"
)

// stringsFlag is a flag that may be given many times.
type stringsFlag []string

func (f *stringsFlag) String() string { return strings.Join(*f, ",") }

func (f *stringsFlag) Type() string { return "strings" }

func (f *stringsFlag) Set(s string) error {
	*f = append(*f, s)
	return nil
}

// idsFlag is a job id flag that may be given many times.
type idsFlag []int64

func (f *idsFlag) String() string {
	parts := make([]string, len(*f))
	for i, id := range *f {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ",")
}

func (f *idsFlag) Type() string { return "ids" }

func (f *idsFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		id, err := parseID(part)
		if err != nil {
			return err
		}
		*f = append(*f, id)
	}
	return nil
}

// pairsFlag is a k=v flag that may be given many times.
type pairsFlag struct {
	m map[string]string
}

func (f *pairsFlag) String() string {
	if f == nil || len(f.m) == 0 {
		return ""
	}
	parts := make([]string, 0, len(f.m))
	for k, v := range f.m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (f *pairsFlag) Type() string { return "pairs" }

func (f *pairsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not of the form key=value", s)
	}
	if f.m == nil {
		f.m = map[string]string{}
	}
	f.m[k] = v
	return nil
}

// statesFlag is a --state flag: many times, or comma separated.
type statesFlag []rpc.State

func (f *statesFlag) String() string {
	parts := make([]string, len(*f))
	for i, s := range *f {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}

func (f *statesFlag) Type() string { return "states" }

func (f *statesFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		st := rpc.State(strings.TrimSpace(part))
		switch st {
		case rpc.StateQueued, rpc.StateRunning, rpc.StateSucceeded, rpc.StateFailed, rpc.StateCancelled:
		default:
			return fmt.Errorf("unknown state %q (queued, running, succeeded, failed, cancelled)", part)
		}
		*f = append(*f, st)
	}
	return nil
}

// parseID reads a job id: a positive integer, with an optional leading '#'.
func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(strings.TrimSpace(s), "#"), 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%q is not a job id", s)
	}
	return id, nil
}

// parseIDs reads job ids given as arguments.
func parseIDs(args []string) ([]int64, error) {
	ids := make([]int64, 0, len(args))
	for _, s := range args {
		id, err := parseID(s)
		if err != nil {
			return nil, usagef("%v", err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
