package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ), 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procCPU returns the CPU time, user and system, process pid has used, plus
// with children that of the children it has reaped.
func procCPU(pid int, children bool) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f, err := statFields(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return cpuOf(f, children), nil
}

// groupCPU returns the CPU time used by the processes of process group pgid,
// including the children they have reaped: Dovecot's master reaps the pop3
// process of each ended session, so that session's time moves into the
// master's total rather than vanishing.
func groupCPU(pgid int) (time.Duration, error) {
	return sumCPU(func(f []string) bool { return f[2] == strconv.Itoa(pgid) })
}

// sumCPU adds up the CPU time of the processes whose /proc/PID/stat fields
// (after "(comm)") keep accepts, reaped children included.
func sumCPU(keep func(stat []string) bool) (time.Duration, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		f, err := statFields(b)
		if err != nil || !keep(f) {
			continue
		}
		total += cpuOf(f, true)
	}
	return total, nil
}

// statFields returns the fields of /proc/PID/stat after "(comm)": state,
// ppid, pgrp, ... The name may contain spaces and parentheses.
func statFields(b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("malformed")
	}
	return f, nil
}

// cpuOf adds utime and stime (fields 14 and 15 of proc(5)), and with children
// cutime and cstime (16 and 17).
func cpuOf(f []string, children bool) time.Duration {
	last := 12
	if children {
		last = 14
	}
	var ticks int64
	for _, s := range f[11 : last+1] {
		n, _ := strconv.ParseInt(s, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * clockTick
}

// cpuMeter measures the server CPU time a target uses over an interval.
type cpuMeter struct {
	t        target
	start    time.Duration
	hopStart time.Duration
	err      error
}

func startCPU(t target) *cpuMeter {
	m := &cpuMeter{t: t}
	m.start, m.err = t.cpu()
	if t.hop != nil && m.err == nil {
		m.hopStart, m.err = t.hop()
	}
	return m
}

// hopUsed returns the CPU time of the target's own processes since
// startCPU (see target.hop): NaN, reported as "-", for a server measured
// directly.
func (m *cpuMeter) hopUsed() (float64, error) {
	if m.t.hop == nil {
		return math.NaN(), nil
	}
	if m.err != nil {
		return 0, m.err
	}
	now, err := m.t.hop()
	return float64(now - m.hopStart), err
}

// used returns the CPU time since startCPU.
func (m *cpuMeter) used() (time.Duration, error) {
	if m.err != nil {
		return 0, m.err
	}
	now, err := m.t.cpu()
	return now - m.start, err
}

// loadAverage returns the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// treeCPU returns the CPU time used by process pid and its children,
// including those they have reaped: nginx's master and its workers, which
// stay in popbench's process group.
func treeCPU(pid int) (time.Duration, error) {
	own, err := procCPU(pid, true)
	if err != nil {
		return 0, err
	}
	children, err := sumCPU(func(f []string) bool { return f[1] == strconv.Itoa(pid) })
	return own + children, err
}
