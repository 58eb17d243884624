package proxy

import "github.com/popproxy/popproxy/internal/route"

// route picks the upstream for user and the login name to use there. Without
// a Router every user goes to Options.Upstream under their own name.
func (srv *Server) route(user string) (Upstream, string, error) {
	if srv.opts.Router == nil {
		return srv.opts.Upstream, user, nil
	}
	t, err := srv.opts.Router.Route(user)
	if err != nil {
		return Upstream{}, "", err
	}
	up, err := srv.target(t)
	return up, t.Login, err
}

// defaultRoute returns the upstream of users whom no route names.
func (srv *Server) defaultRoute() (Upstream, error) {
	if srv.opts.Router == nil {
		return srv.opts.Upstream, nil
	}
	t, err := srv.opts.Router.Default()
	if err != nil {
		return Upstream{}, err
	}
	return srv.target(t)
}

// target is the upstream a route chose, with the router's addresses.
func (srv *Server) target(t route.Target) (Upstream, error) {
	up, ok := srv.opts.Upstreams[t.Upstream]
	if !ok {
		return Upstream{}, route.ErrNoRoute
	}
	up.Name, up.Addresses = t.Upstream, t.Addresses
	return up, nil
}
