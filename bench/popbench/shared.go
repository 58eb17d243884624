package main

// The cost of limits.shared, as sessions per second (sessions.go's workload,
// -clients concurrent clients) through two popproxy processes in front of the
// same Dovecot, interleaved like direct and proxy:
//
//	shared-sessions  limitsHigh kept by the instance (limits-local) against
//	                 the same limits in a private redis-server that popbench
//	                 starts (limits-shared): with limitsHigh's connection
//	                 rate and per-user sessions, every session makes each
//	                 round trip the store can cost (connection rate at
//	                 connect; block, login and session slot at login; the
//	                 slot's release at close)
//
// The store's CPU counts in limits-shared's CPU per session. Its round trips
// and their failures (the store not answering within limits.shared.timeout,
// 50 ms, when the proxy falls back to its own limits) are read from the
// proxy's /metrics and noted.

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/popproxy/popproxy/internal/testredis"
)

const sectionShared = "shared"

// sharedSessions compares sessions/s with the limits kept locally and in
// a private Redis.
func (b *bench) sharedSessions() error {
	if err := fillLight(b.dc, b.o.seed); err != nil {
		return err
	}
	dir := filepath.Join(b.work, "redis")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	const redisPassword = "bench-redis-secret"
	progress("starting redis-server")
	r, err := testredis.Start(dir, redisPassword)
	if err != nil {
		return err
	}
	atExit(r.Stop)
	defer r.Stop()
	pwFile := filepath.Join(b.work, "redis.password")
	if err := os.WriteFile(pwFile, []byte(redisPassword+"\n"), 0o600); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	names := [2]string{"limits-local", "limits-shared"}
	confs := [2]proxyConf{
		{upstream: b.dc.Addr(), audit: b.o.audit, limits: limitsHigh},
		{upstream: b.dc.Addr(), audit: b.o.audit, admin: admin,
			limits: limitsHigh + fmt.Sprintf("  shared:\n    address: %s\n    password_file: %s\n", r.Addr(), pwFile)},
	}
	var targets []target
	for i, pc := range confs {
		p, err := startProxyConf(b.proxyBin, b.work, names[i], pc)
		if err != nil {
			return err
		}
		defer p.stop()
		t := p.target(names[i], b.direct)
		if i == 1 {
			t.cpu = withStoreCPU(t.cpu, r.Pid())
		}
		if err := warmUp(t, userLight); err != nil {
			return err
		}
		targets = append(targets, t)
	}
	before, err := scrapeStore(admin)
	if err != nil {
		return err
	}
	c := variant(sessionsComparison(b.o.clients, b.o.sessionTime), sectionShared, "", ratioAtLeast(0.9))
	if err := compare(b.rep, evenRounds(b.o.rounds), targets, []comparison{c}); err != nil {
		return err
	}
	after, err := scrapeStore(admin)
	if err != nil {
		return err
	}
	trips, failed := after.trips-before.trips, after.errors-before.errors
	mean := 0.0
	if trips > 0 {
		mean = (after.seconds - before.seconds) / trips * 1e3
	}
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("shared-sessions: %d clients; limits-shared made %.0f store round trips "+
		"(mean %.2f ms), %.0f of them unanswered within the 50 ms timeout and answered by the instance's own limits; "+
		"its CPU per session includes redis-server's", b.o.clients, trips, mean, failed))
	return nil
}

// withStoreCPU adds the CPU time of the redis-server pid (its own process
// group) to cpu.
func withStoreCPU(cpu func() (time.Duration, error), pid int) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		own, err := cpu()
		if err != nil {
			return 0, err
		}
		store, err := groupCPU(pid)
		return own + store, err
	}
}

// storeCounts are the proxy's shared-limits metrics: round trips, their
// total time and errors.
type storeCounts struct{ trips, seconds, errors float64 }

// scrapeStore reads storeCounts from the admin listener at admin.
func scrapeStore(admin string) (storeCounts, error) {
	var sc storeCounts
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		return sc, err
	}
	defer resp.Body.Close()
	series := map[string]*float64{
		"popproxy_shared_limits_round_trip_seconds_count": &sc.trips,
		"popproxy_shared_limits_round_trip_seconds_sum":   &sc.seconds,
		"popproxy_shared_limits_errors_total":             &sc.errors,
	}
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		name, value, ok := strings.Cut(s.Text(), " ")
		if p := series[name]; ok && p != nil {
			*p, _ = strconv.ParseFloat(value, 64)
		}
	}
	return sc, s.Err()
}
