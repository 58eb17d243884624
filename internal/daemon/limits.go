package daemon

import (
	"golang.org/x/time/rate"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/proxy"
)

// proxyLimits maps the configuration's limits onto the proxy's.
func proxyLimits(l config.Limits) (proxy.Limits, error) {
	trusted, err := ratelimit.ParseNetworks(l.TrustedNetworks)
	if err != nil {
		return proxy.Limits{}, err
	}
	return proxy.Limits{
		MaxSessions:      l.MaxSessions,
		Trusted:          trusted,
		IPv6Prefix:       l.IPv6Prefix,
		PerIPSessions:    l.PerIP.MaxSessions,
		PerIPRate:        rate.Limit(l.PerIP.ConnectionRate),
		PerIPBurst:       l.PerIP.ConnectionBurst,
		FailuresPerIP:    penalty(l.FailedLogins.PerIP),
		FailuresPerUser:  penalty(l.FailedLogins.PerUser),
		PerUserSessions:  l.PerUser.MaxSessions,
		LoginDelay:       l.PerUser.LoginDelay,
		CommandRate:      rate.Limit(l.PerSession.CommandRate),
		CommandBurst:     l.PerSession.CommandBurst,
		SessionBandwidth: l.PerSession.DownloadRate,
		UserBandwidth:    l.PerUser.DownloadRate,
		MaxRetrievals:    l.PerSession.MaxRetrievals,
		KeepUsernameCase: l.UsernameCase == "keep",
	}, nil
}

func penalty(p config.Penalty) ratelimit.FailureConfig {
	return ratelimit.FailureConfig{MaxFailures: p.Max, Window: p.Window, BaseDelay: p.Delay, MaxDelay: p.MaxDelay, Block: p.Block}
}
