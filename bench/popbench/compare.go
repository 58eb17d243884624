package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// comparison is a workload measured on every target.
type comparison struct {
	name    string
	metrics []metricSpec
	// section is the table its metrics are printed in; "" is the first.
	section string
	// extra are ratios {of, to} reported besides target/baseline.
	extra [][2]string
	// counterbalance reverses the targets' order in odd rounds (see once).
	counterbalance bool
	// run measures every target once, the targets taking turns (see
	// interleave), and returns vals[target][metric].
	run func([]target) ([][]float64, error)
}

// interleave calls step(b, t) for every block b and target t, block by block,
// reversing the order of the targets every other block, so that every target
// meets the same background load and none always goes first and finds caches
// warmed by another. Blocks should last about a second: background load on a
// shared machine changes by the second, but shorter blocks leave each target
// idle too often. With blocks of 15 ms (500 NOOPs) to 0.3 s, the proxy was
// measured up to twice as slow as in steady use, and used up to twice the CPU
// per NOOP, probably because the kernel's estimate of its load decays while it
// waits (half-life 32 ms) and the scheduler then places it differently.
func interleave(blocks, targets int, step func(b, t int) error) error {
	for b := 0; b < blocks; b++ {
		for i := 0; i < targets; i++ {
			t := i
			if b%2 == 1 {
				t = targets - 1 - i
			}
			if err := step(b, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// metricSpec names a figure a comparison produces and the goal it is held to.
type metricSpec struct {
	name, unit string
	goal       goal // zero: reported only
}

// goal is a target a figure must meet: its ratio to the baseline's when
// relative, else the figure itself, at least or at most limit.
type goal struct {
	relative bool
	atLeast  bool
	limit    float64
	unit     string
}

func ratioAtLeast(r float64) goal { return goal{relative: true, atLeast: true, limit: r} }
func ratioAtMost(r float64) goal  { return goal{relative: true, limit: r} }
func atMost(v float64, unit string) goal {
	return goal{limit: v, unit: unit}
}
func atLeast(v float64, unit string) goal {
	return goal{atLeast: true, limit: v, unit: unit}
}

func (g goal) isZero() bool { return g == goal{} }

func (g goal) text() string {
	if g.isZero() {
		return ""
	}
	op := "≤"
	if g.atLeast {
		op = "≥"
	}
	if g.relative {
		return fmt.Sprintf("%s %g×", op, g.limit)
	}
	return fmt.Sprintf("%s %g %s", op, g.limit, g.unit)
}

func (g goal) met(v float64) bool {
	if g.atLeast {
		return v >= g.limit
	}
	return v <= g.limit
}

// compare runs each comparison rounds times and appends the medians to rep.
// The first target is the baseline.
func compare(rep *report, rounds int, targets []target, comps []comparison) error {
	// runs[c][m][t] holds the values of metric m of comparison c on target t.
	runs := make([][][][]float64, len(comps))
	for ci, c := range comps {
		runs[ci] = make([][][]float64, len(c.metrics))
		for mi := range c.metrics {
			runs[ci][mi] = make([][]float64, len(targets))
		}
	}
	for r := 0; r < rounds; r++ {
		for ci, c := range comps {
			vals, err := c.once(targets, r)
			if err != nil {
				return fmt.Errorf("round %d: %s: %w", r+1, c.name, err)
			}
			for ti, tv := range vals {
				var shown []string
				for mi, v := range tv {
					runs[ci][mi][ti] = append(runs[ci][mi][ti], v)
					shown = append(shown, fmt.Sprintf("%s %s %s", c.metrics[mi].name, format(v), c.metrics[mi].unit))
				}
				progress("round %d/%d %-9s %s", r+1, rounds, targets[ti].name, strings.Join(shown, ", "))
			}
		}
	}
	for ci, c := range comps {
		for mi, spec := range c.metrics {
			m := metric{Name: spec.name, Unit: spec.unit, Baseline: targets[0].name, goal: spec.goal,
				Section: c.section, extra: c.extra}
			base := runs[ci][mi][0]
			for ti, t := range targets {
				vs := runs[ci][mi][ti]
				if slices.ContainsFunc(vs, math.IsNaN) {
					continue // a figure only proxies have: their own CPU time
				}
				v := targetValue{Target: t.name, Median: median(vs), Runs: vs, Reference: t.reference}
				if ti > 0 && !slices.ContainsFunc(base, math.IsNaN) {
					for r := range vs {
						v.Ratios = append(v.Ratios, vs[r]/base[r])
					}
				}
				m.Values = append(m.Values, v)
			}
			rep.Metrics = append(rep.Metrics, m)
		}
	}
	return nil
}

// once runs c in round r. A counterbalanced comparison takes the targets in
// reverse order in odd rounds, so that over an even number of rounds each
// target is measured first as often as the others: in A/A runs (two
// identical proxies, bulk RETR) the target measured first in a round came
// out up to 8% slower, or in other conditions faster, than the second, and
// interleaving blocks within the round did not cancel it.
func (c comparison) once(targets []target, r int) ([][]float64, error) {
	if !c.counterbalance || r%2 == 0 {
		return c.run(targets)
	}
	ts := slices.Clone(targets)
	slices.Reverse(ts)
	vals, err := c.run(ts)
	slices.Reverse(vals)
	return vals, err
}

// evenRounds is n rounded up to an even number, for counterbalanced
// comparisons.
func evenRounds(n int) int { return n + n%2 }

// variant returns c printed in section sec, with its metrics' names prefixed,
// its first metric held to g instead (a zero g: reported only), and
// counterbalanced; run it for evenRounds.
func variant(c comparison, sec, prefix string, g goal) comparison {
	c.section = sec
	c.counterbalance = true
	c.metrics = slices.Clone(c.metrics)
	for i := range c.metrics {
		c.metrics[i].name = prefix + c.metrics[i].name
	}
	c.metrics[0].goal = g
	return c
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
