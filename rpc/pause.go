package rpc

import (
	"context"
	"sort"
	"strconv"
	"strings"
)

// Methods of pausing and signalling a running job.
const (
	MethodPause  = "job.pause"
	MethodResume = "job.resume"
	MethodSignal = "job.signal"
)

// Pauser is the part of the Service that pauses, resumes and signals running
// jobs.
type Pauser interface {
	Pause(ctx context.Context, p PauseParams) (*Job, error)
	Resume(ctx context.Context, p PauseParams) (*Job, error)
	Signal(ctx context.Context, p SignalParams) (*Job, error)
}

// PauseParams names the job to pause or resume.
type PauseParams struct {
	ID int64 `json:"id"`
}

// Validate checks the params.
func (p PauseParams) Validate() error {
	return checkID("id", p.ID)
}

// SignalParams names the job and the signal to send to its running step's
// processes: a name such as "HUP" or "SIGUSR1", in any case.
type SignalParams struct {
	ID     int64  `json:"id"`
	Signal string `json:"signal"`
}

// Validate checks the params.
func (p SignalParams) Validate() error {
	if err := checkID("id", p.ID); err != nil {
		return err
	}
	if _, ok := SignalName(p.Signal); !ok {
		return InvalidParams("signal", "unknown signal "+strconv.Quote(p.Signal)+"; one of "+strings.Join(SignalNames(), ", "))
	}
	return nil
}

// signalNames are the signals job.signal knows, without their SIG prefix.
var signalNames = map[string]bool{
	"HUP": true, "INT": true, "QUIT": true, "ILL": true, "TRAP": true, "ABRT": true,
	"BUS": true, "FPE": true, "KILL": true, "USR1": true, "SEGV": true, "USR2": true,
	"PIPE": true, "ALRM": true, "TERM": true, "CHLD": true, "CONT": true, "STOP": true,
	"TSTP": true, "TTIN": true, "TTOU": true, "URG": true, "XCPU": true, "XFSZ": true,
	"VTALRM": true, "PROF": true, "WINCH": true, "IO": true, "SYS": true,
}

// SignalName gives the canonical name ("SIGHUP") of a signal named as "hup",
// "SIGHUP" or "sigHup"; ok is false for a name job.signal does not know.
func SignalName(s string) (string, bool) {
	n := strings.ToUpper(strings.TrimSpace(s))
	n = strings.TrimPrefix(n, "SIG")
	if !signalNames[n] {
		return "", false
	}
	return "SIG" + n, true
}

// SignalNames lists the names job.signal knows, sorted, without SIG.
func SignalNames() []string {
	out := make([]string, 0, len(signalNames))
	for n := range signalNames {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
