package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
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
	// Notes say how a measurement departed from its plain description.
	Notes []string `json:"notes,omitempty"`
}

// metric is one figure for every target measured.
type metric struct {
	// Section is the table the metric is printed in; "" is the first, that
	// of the original direct-versus-proxy measurements.
	Section string `json:"section,omitempty"`
	Name    string `json:"name"`
	Unit    string `json:"unit"`
	// Baseline names the target the others are compared with; empty for
	// figures measured on the proxy only.
	Baseline string        `json:"baseline,omitempty"`
	Values   []targetValue `json:"values"`
	Goal     string        `json:"goal,omitempty"`
	Detail   string        `json:"detail,omitempty"`
	// Extra are ratios between targets other than target/baseline.
	Extra []pairRatio `json:"extra_ratios,omitempty"`
	goal  goal
	extra [][2]string // {of, to} of each Extra
}

// pairRatio is Of's value over To's: the median of the per-round ratios.
type pairRatio struct {
	Of     string    `json:"of"`
	To     string    `json:"to"`
	Ratio  float64   `json:"ratio"`
	Ratios []float64 `json:"ratios"`
}

func (p pairRatio) label() string { return p.Of + "/" + p.To }

// value returns the value of target name, or nil.
func (m *metric) value(name string) *targetValue {
	for i := range m.Values {
		if m.Values[i].Target == name {
			return &m.Values[i]
		}
	}
	return nil
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
		m.Extra = nil
		for _, pair := range m.extra {
			of, to := m.value(pair[0]), m.value(pair[1])
			if of == nil || to == nil || len(of.Runs) != len(to.Runs) {
				continue
			}
			p := pairRatio{Of: of.Target, To: to.Target}
			for r := range of.Runs {
				p.Ratios = append(p.Ratios, of.Runs[r]/to.Runs[r])
			}
			p.Ratio = median(p.Ratios)
			m.Extra = append(m.Extra, p)
		}
	}
}

// sections returns the metrics grouped by section, in order of appearance.
func (rep *report) sections() [][]metric {
	var out [][]metric
	index := map[string]int{}
	for _, m := range rep.Metrics {
		i, ok := index[m.Section]
		if !ok {
			i = len(out)
			index[m.Section] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], m)
	}
	return out
}

// baseline names the first metric's baseline.
func baseline(ms []metric) string {
	for _, m := range ms {
		if m.Baseline != "" {
			return m.Baseline
		}
	}
	return "the baseline"
}

// columns returns the target names in the order they first appear.
func columns(ms []metric) []string {
	var names []string
	for _, m := range ms {
		for _, v := range m.Values {
			if !slices.Contains(names, v.Target) {
				names = append(names, v.Target)
			}
		}
	}
	return names
}

// sectionTitles introduce the tables after the first.
var sectionTitles = map[string]string{
	sectionTLS:     "TLS: implicit TLS 1.3, X25519, clients pin the certificate",
	sectionAudit:   "audit: the same proxy with the audit trail to /dev/null (off) and to a file with the hash chain (on)",
	sectionLimits:  "limits: the same proxy with every limit off (0) and with the defaults",
	sectionIdle10k: "idle-10k: idle logged-in sessions over implicit TLS held at once through popproxy, to internal/maildrop inside popbench, clients from 127.0.0.2-9",
	sectionSoak:    "soak: TLS clients fetching, checking (SHA-256) and deleting mail while Dovecot is restarted (2 s) or paused (1.5 s) every 15 s",
}

// writeTable prints the medians, one table per section: metric | each
// target | each ratio | goal | result, then the notes, each round's values
// and the details.
func (rep *report) writeTable(w io.Writer) {
	rep.judge()
	sections := rep.sections()
	fmt.Fprintf(w, "popbench %s  %s, %d CPUs, mailbox %d messages / %.1f MB, %d rounds, audit %s\n",
		rep.Started.Format(time.RFC3339), rep.GoVersion, rep.CPUs, rep.Messages, float64(rep.MailboxBytes)/1e6, rep.Rounds, rep.Audit)
	fmt.Fprintf(w, "took %s; load average %s at the start, %s at the end\n", rep.Duration, rep.LoadStart, rep.LoadEnd)
	if len(sections) > 0 && sections[0][0].Section == "" {
		fmt.Fprintf(w, "values: median of the rounds; ratio: median of each round's ratio to %s\n", baseline(sections[0]))
	} else {
		fmt.Fprintln(w, "values: median of the rounds")
	}
	for _, ms := range sections {
		if sec := ms[0].Section; sec != "" {
			fmt.Fprintf(w, "\n%s\n  A/B: median of each round's ratio of A to B\n", sectionTitles[sec])
		}
		fmt.Fprintln(w)
		writeSection(w, ms)
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range rep.Notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}

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
				parts = append(parts, "ratio "+ratioList(v.Ratios))
			}
		}
		for _, p := range m.Extra {
			parts = append(parts, p.label()+" "+ratioList(p.Ratios))
		}
		name := m.Name
		if m.Section != "" {
			name = m.Section + ": " + name
		}
		fmt.Fprintf(w, "  %s: %s\n", name, strings.Join(parts, "; "))
		if m.Detail != "" {
			fmt.Fprintf(w, "    %s\n", m.Detail)
		}
	}
}

// writeSection prints the table of one section. Its ratio columns are every
// target over its metric's baseline, then the extra ratios; in the first
// section a single ratio column is just "ratio".
func writeSection(w io.Writer, ms []metric) {
	cols := columns(ms)
	var labels []string
	for _, m := range ms {
		for _, v := range m.Values {
			if l := v.Target + "/" + m.Baseline; v.Ratio != 0 && !slices.Contains(labels, l) {
				labels = append(labels, l)
			}
		}
		for _, p := range m.Extra {
			if !slices.Contains(labels, p.label()) {
				labels = append(labels, p.label())
			}
		}
	}
	header := append([]string{"metric"}, cols...)
	if len(labels) == 1 && ms[0].Section == "" {
		header = append(header, "ratio")
	} else {
		header = append(header, labels...)
	}
	header = append(header, "goal", "result")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, m := range ms {
		cells := []string{fmt.Sprintf("%s (%s)", m.Name, m.Unit)}
		ratios := make([]string, len(labels))
		for i := range ratios {
			ratios[i] = "-"
		}
		result := "-"
		for _, col := range cols {
			cell := "-"
			if v := m.value(col); v != nil {
				cell = format(v.Median)
				if i := slices.Index(labels, v.Target+"/"+m.Baseline); i >= 0 && v.Ratio != 0 {
					ratios[i] = fmt.Sprintf("%.2f×", v.Ratio)
				}
				if v.Pass != nil {
					result = map[bool]string{true: "ok", false: "MISSED"}[*v.Pass]
				}
			}
			cells = append(cells, cell)
		}
		for _, p := range m.Extra {
			ratios[slices.Index(labels, p.label())] = fmt.Sprintf("%.2f×", p.Ratio)
		}
		goalText := m.Goal
		if goalText == "" {
			goalText = "-"
		}
		cells = append(cells, ratios...)
		cells = append(cells, goalText, result)
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
}

func ratioList(rs []float64) string {
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprintf("%.2f", r))
	}
	return strings.Join(s, " ")
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
	case math.IsNaN(v):
		return "-"
	case v >= 1000 || v <= -1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
