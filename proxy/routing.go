package proxy

import "github.com/popproxy/popproxy/internal/route"

// route picks the upstream for user and the login name to use there.
func (srv *Server) route(user string) (Upstream, string, error) {
	t, err := srv.opts.Router.Route(user)
	if err != nil {
		return Upstream{}, "", err
	}
	up, err := srv.resolve(t.Upstream, t.Addresses)
	return up, t.Login, err
}

// defaultRoute returns the upstream of users whom no route names.
func (srv *Server) defaultRoute() (Upstream, error) {
	t, err := srv.opts.Router.Default()
	if err != nil {
		return Upstream{}, err
	}
	return srv.resolve(t.Upstream, t.Addresses)
}

// reachable returns the upstreams some route leads to now.
func (srv *Server) reachable() []Upstream {
	var ups []Upstream
	for _, t := range srv.opts.Router.Reachable() {
		up, err := srv.resolve(t.Name, t.Addresses)
		if err != nil {
			continue // route refuses it: nobody logs in there
		}
		ups = append(ups, up)
	}
	return ups
}

// resolve is the one complete description of the upstream a route chose:
// the router's addresses (reloadable) with the rest of Options.Upstreams'
// settings for that name.
func (srv *Server) resolve(name string, addrs []string) (Upstream, error) {
	up, ok := srv.opts.Upstreams[name]
	if !ok {
		return Upstream{}, route.ErrNoRoute
	}
	up.Name, up.Addresses = name, addrs
	return up, nil
}
