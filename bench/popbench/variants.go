package main

// Variants of the proxy's configuration, each measured as bulk RETR through
// two popproxy processes in front of the same Dovecot, interleaved like
// direct and proxy (see retr.go):
//
//	audit-retr   audit trail to /dev/null (off, as the other measurements)
//	             against full auditing to a file: hash chain on,
//	             resolve_uids off (Message-IDs are extracted either way);
//	             also the audit file's size per GB relayed
//	limits-retr  every limit off against the defaults

import (
	"bytes"
	"fmt"
	"os"
	"strings"
)

const (
	sectionAudit  = "audit"
	sectionLimits = "limits"
)

// limitsDefaultFastCommands is the defaults (no limits section) except the
// per-session command rate, raised so that the RETR loop, one command per
// message, is not refused after the default burst of 200.
const limitsDefaultFastCommands = `limits:
  per_session:
    command_rate: 1000000
`

// proxyRETR measures bulk RETR through two proxies: names[0] with confs[0]
// is the baseline, held to the goal g. It returns the bytes of RETR bodies
// each proxy relayed.
func (b *bench) proxyRETR(section string, g goal, names [2]string, confs [2]proxyConf, before func() error) (int64, error) {
	want, err := b.bulk()
	if err != nil {
		return 0, err
	}
	var targets []target
	for i, pc := range confs {
		pc.upstream = b.dc.Addr()
		p, err := startProxyConf(b.proxyBin, b.work, names[i], pc)
		if err != nil {
			return 0, err
		}
		defer p.stop()
		t := p.target(names[i], b.direct)
		if err := warmUp(t, userBulk, userLight); err != nil {
			return 0, err
		}
		targets = append(targets, t)
	}
	if before != nil {
		if err := before(); err != nil {
			return 0, err
		}
	}
	c := variant(retrComparison(want, ordinaryClient), section, "", g)
	if err := compare(b.rep, evenRounds(b.o.rounds), targets, []comparison{c}); err != nil {
		return 0, err
	}
	var body int64
	for _, w := range want {
		body += w
	}
	return body * int64(evenRounds(b.o.rounds)), nil
}

// auditRETR compares audit off and on, and reports the size of the audit
// trail the RETRs wrote.
func (b *bench) auditRETR() error {
	file := auditFile(b.work, "audit-on")
	var start int64
	relayed, err := b.proxyRETR(sectionAudit, ratioAtLeast(0.95), [2]string{"audit-off", "audit-on"},
		[2]proxyConf{{audit: "off", limits: limitsHigh}, {audit: "chain", limits: limitsHigh}},
		func() error {
			fi, err := os.Stat(file) // after the warm-up's records
			start = fi.Size()
			return err
		})
	if err != nil {
		return err
	}
	trail, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	written := trail[start:]
	records := bytes.Count(written, []byte("\n"))
	retrs := bytes.Count(written, []byte(`"RETR"`))
	perGB := float64(len(written)) / 1e6 / (float64(relayed) / 1e9)
	b.rep.Metrics = append(b.rep.Metrics, metric{
		Section: sectionAudit,
		Name:    "audit file per GB relayed",
		Unit:    "MB/GB",
		Values:  []targetValue{{Target: "audit-on", Median: perGB, Runs: []float64{perGB}}},
		Detail: fmt.Sprintf("%d bytes, %d records (%d mention RETR) for %.2f GB of RETR bodies in %d rounds",
			len(written), records, retrs, float64(relayed)/1e9, evenRounds(b.o.rounds)),
	})
	return nil
}

// limitsRETR compares every limit off with the defaults. The defaults'
// command rate (50/s, burst 200) refuses the RETR loop: a probe shows it,
// and the measurement then raises that one limit.
func (b *bench) limitsRETR() error {
	defaults := ""
	refused, err := b.probeDefaultLimits()
	if err != nil {
		return err
	}
	if refused != "" {
		defaults = limitsDefaultFastCommands
		b.rep.Notes = append(b.rep.Notes, "limits-retr: with the defaults alone the RETR loop is refused: "+refused+
			"; limits-default is the defaults with only per_session.command_rate raised to 1000000/s (burst stays 200)")
	} else {
		b.rep.Notes = append(b.rep.Notes, "limits-retr: the defaults did not refuse the RETR loop; limits-default is the defaults as they are")
	}
	_, err = b.proxyRETR(sectionLimits, ratioAtLeast(0.97), [2]string{"limits-off", "limits-default"},
		[2]proxyConf{{audit: b.o.audit, limits: limitsOff}, {audit: b.o.audit, limits: defaults}}, nil)
	return err
}

// probeDefaultLimits fetches the bulk mailbox's messages through a proxy
// with the default limits, as fast as the RETR measurement does, up to 1,000
// of them, and returns the refusal that stopped it, if one did.
func (b *bench) probeDefaultLimits() (string, error) {
	want, err := b.bulk()
	if err != nil {
		return "", err
	}
	p, err := startProxyConf(b.proxyBin, b.work, "limits-probe", proxyConf{upstream: b.dc.Addr(), audit: b.o.audit})
	if err != nil {
		return "", err
	}
	defer p.stop()
	c, err := dialLogin(p.target("limits-probe", b.direct), 32<<10, userBulk)
	if err != nil {
		return "", err
	}
	defer c.conn.Close()
	for i := 1; i <= min(len(want), 1000); i++ {
		if _, _, err := c.retr(i); err != nil {
			if strings.Contains(err.Error(), "-ERR") {
				return err.Error(), nil
			}
			return "", fmt.Errorf("limits probe: %w", err)
		}
	}
	return "", p.stop()
}
