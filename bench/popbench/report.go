package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// report is the outcome of a run, printed as a table and written as JSON.
type report struct {
	Started      time.Time `json:"started"`
	Duration     string    `json:"duration"`
	GoVersion    string    `json:"go_version"`
	CPUs         int       `json:"cpus"`
	Seed         int64     `json:"seed"`
	MailboxBytes int64     `json:"mailbox_bytes"`
	Messages     int       `json:"messages"`
	Rounds       int       `json:"rounds"`
	LoadStart    string    `json:"load_start"` // /proc/loadavg
	LoadEnd      string    `json:"load_end"`
	Audit        string    `json:"audit"`
	Metrics      []metric  `json:"metrics"`
}

// metric is one figure for every target measured.
type metric struct {
	Name string `json:"name"`
	Unit string `json:"unit"`
	// Baseline names the target the others are compared with; empty for
	// figures measured on the proxy only.
	Baseline string        `json:"baseline,omitempty"`
	Values   []targetValue `json:"values"`
	Goal     string        `json:"goal,omitempty"`
	Detail   string        `json:"detail,omitempty"`
	goal     goal
}

// targetValue is a figure of one target: the median over the rounds, and
// for targets other than the baseline, the ratio and whether the goal is met.
// Ratios are taken per round, between measurements interleaved with each
// other, and Ratio is their median.
type targetValue struct {
	Target string    `json:"target"`
	Median float64   `json:"median"`
	Runs   []float64 `json:"runs"`
	Ratios []float64 `json:"ratios,omitempty"`
	Ratio  float64   `json:"ratio,omitempty"`
	Pass   *bool     `json:"pass,omitempty"`
	// Reference values are shown for comparison, never judged.
	Reference bool `json:"reference,omitempty"`
}

// judge fills in ratios, goals and verdicts.
func (rep *report) judge() {
	for i := range rep.Metrics {
		m := &rep.Metrics[i]
		m.Goal = m.goal.text()
		var base float64
		for _, v := range m.Values {
			if v.Target == m.Baseline {
				base = v.Median
			}
		}
		for j := range m.Values {
			v := &m.Values[j]
			if v.Target == m.Baseline {
				continue
			}
			x := v.Median
			if len(v.Ratios) > 0 {
				v.Ratio = median(v.Ratios)
			} else if m.Baseline != "" && base != 0 {
				v.Ratio = v.Median / base
			}
			if m.goal.relative {
				x = v.Ratio
			}
			if !m.goal.isZero() && !v.Reference {
				ok := m.goal.met(x)
				v.Pass = &ok
			}
		}
	}
}

// baseline names the first metric's baseline.
func (rep *report) baseline() string {
	for _, m := range rep.Metrics {
		if m.Baseline != "" {
			return m.Baseline
		}
	}
	return "the baseline"
}

// columns returns the target names in the order they first appear.
func (rep *report) columns() []string {
	var names []string
	for _, m := range rep.Metrics {
		for _, v := range m.Values {
			if !slices.Contains(names, v.Target) {
				names = append(names, v.Target)
			}
		}
	}
	return names
}

// writeTable prints the medians: metric | each target | each ratio to the
// baseline | goal | result, then each round's values and the details.
func (rep *report) writeTable(w io.Writer) {
	rep.judge()
	cols := rep.columns()
	base := rep.baseline()
	fmt.Fprintf(w, "popbench %s  %s, %d CPUs, mailbox %d messages / %.1f MB, %d rounds, audit %s\n",
		rep.Started.Format(time.RFC3339), rep.GoVersion, rep.CPUs, rep.Messages, float64(rep.MailboxBytes)/1e6, rep.Rounds, rep.Audit)
	fmt.Fprintf(w, "took %s; load average %s at the start, %s at the end\n", rep.Duration, rep.LoadStart, rep.LoadEnd)
	fmt.Fprintf(w, "values: median of the rounds; ratio: median of each round's ratio to %s\n\n", base)

	var ratioCols []string // targets other than the baseline
	for _, c := range cols {
		if c != base {
			ratioCols = append(ratioCols, c)
		}
	}
	header := []string{"metric"}
	header = append(header, cols...)
	for _, c := range ratioCols {
		if len(ratioCols) == 1 {
			header = append(header, "ratio")
		} else {
			header = append(header, c+"/"+base)
		}
	}
	header = append(header, "goal", "result")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, m := range rep.Metrics {
		cells := []string{fmt.Sprintf("%s (%s)", m.Name, m.Unit)}
		ratios := make([]string, len(ratioCols))
		result := "-"
		for _, col := range cols {
			cell := "-"
			for _, v := range m.Values {
				if v.Target != col {
					continue
				}
				cell = format(v.Median)
				if i := slices.Index(ratioCols, col); i >= 0 && v.Ratio != 0 {
					ratios[i] = fmt.Sprintf("%.2f×", v.Ratio)
				}
				if v.Pass != nil {
					result = map[bool]string{true: "ok", false: "MISSED"}[*v.Pass]
				}
			}
			cells = append(cells, cell)
		}
		for _, r := range ratios {
			if r == "" {
				r = "-"
			}
			cells = append(cells, r)
		}
		goalText := m.Goal
		if goalText == "" {
			goalText = "-"
		}
		cells = append(cells, goalText, result)
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()

	fmt.Fprintln(w, "\neach round:")
	for _, m := range rep.Metrics {
		var parts []string
		for _, v := range m.Values {
			var rs []string
			for _, r := range v.Runs {
				rs = append(rs, format(r))
			}
			parts = append(parts, v.Target+" "+strings.Join(rs, " "))
			if len(v.Ratios) > 0 {
				rs = rs[:0]
				for _, r := range v.Ratios {
					rs = append(rs, fmt.Sprintf("%.2f", r))
				}
				parts = append(parts, "ratio "+strings.Join(rs, " "))
			}
		}
		fmt.Fprintf(w, "  %s: %s\n", m.Name, strings.Join(parts, "; "))
		if m.Detail != "" {
			fmt.Fprintf(w, "    %s\n", m.Detail)
		}
	}
}

// writeJSON writes the report to path.
func (rep *report) writeJSON(path string) error {
	rep.judge()
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// format prints a figure with a precision fit for its size.
func format(v float64) string {
	switch {
	case v >= 1000 || v <= -1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
