package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// durations is a sample of measured durations.
type durations []time.Duration

// pct returns the p-th percentile (0 < p <= 100), nearest rank.
func (d durations) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 1:
		return fmt.Sprintf("%.3f ms", v)
	case v < 100:
		return fmt.Sprintf("%.2f ms", v)
	default:
		return fmt.Sprintf("%.0f ms", v)
	}
}

// rate formats a throughput.
func rate(v float64, unit string) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%s %s", thousands(int64(math.Round(v))), unit)
	default:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
}

// thousands writes n with thin separators: 52,345.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := ""
	if n < 0 {
		neg, s = "-", s[1:]
	}
	out := ""
	for len(s) > 3 {
		out = "," + s[len(s)-3:] + out
		s = s[:len(s)-3]
	}
	return neg + s + out
}

// perSec is count over d.
func perSec(count int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(count) / d.Seconds()
}
