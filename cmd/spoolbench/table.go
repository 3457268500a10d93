package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// verdict says whether a row met its target.
type verdict int

// Verdicts.
const (
	noTarget verdict = iota
	met
	notMet
)

func (v verdict) String() string {
	switch v {
	case met:
		return "met"
	case notMet:
		return "NOT MET"
	}
	return "-"
}

// check turns a condition into a verdict.
func check(ok bool) verdict {
	if ok {
		return met
	}
	return notMet
}

// row is one line of the table.
type row struct {
	figure   string
	value    string
	baseline string  // what the value is compared with, measured in the same run
	ratio    float64 // value over baseline, in the sense where more is better; 0: none
	target   string
	verdict  verdict
	note     string // printed under the table
}

// printTable writes the rows as aligned columns, then their notes.
func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmeasured\tbaseline (same run)\tratio\ttarget\tresult")
	fmt.Fprintln(tw, "------\t--------\t-------------------\t-----\t------\t------")
	for _, r := range rows {
		ratio := "-"
		if r.ratio != 0 {
			ratio = fmt.Sprintf("%.2f", r.ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.figure, dash(r.value), dash(r.baseline), ratio, dash(r.target), r.verdict)
	}
	tw.Flush()
	var notes []string
	for _, r := range rows {
		if r.note != "" {
			notes = append(notes, fmt.Sprintf("  %s: %s", r.figure, r.note))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n%s\n", strings.Join(notes, "\n"))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
