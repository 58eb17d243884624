package route_test

import (
	"errors"
	"fmt"

	"github.com/popproxy/popproxy/internal/route"
)

func ExampleRouter_Route() {
	upstreams := []route.Upstream{
		{Name: "old", Addresses: []string{"10.0.0.1:110", "10.0.0.2:110"}},
		{Name: "new", Addresses: []string{"10.0.1.1:110"}},
	}
	users, domains, def, err := route.LoadMap("testdata/users.map", upstreams...)
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := route.New(route.Config{Upstreams: upstreams, Users: users, Domains: domains,
		Default: def, StripDomain: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, user := range []string{"alice@example.com", "bob@EXAMPLE.org", "carol", "eve\r\nDELE 1"} {
		t, err := r.Route(user)
		switch {
		case errors.Is(err, route.ErrBadUser):
			fmt.Printf("%q: refused: %v\n", user, err)
		case err != nil:
			fmt.Printf("%q: %v\n", user, err)
		default:
			fmt.Printf("%q: %s %v as %q\n", user, t.Upstream, t.Addresses, t.Login)
		}
	}
	// Output:
	// "alice@example.com": new [10.0.1.1:110] as "alice"
	// "bob@EXAMPLE.org": new [10.0.1.1:110] as "bob"
	// "carol": old [10.0.0.1:110 10.0.0.2:110] as "carol"
	// "eve\r\nDELE 1": refused: route: bad user name: control character at octet 3
}

func ExampleLoadMap_errors() {
	upstreams := []route.Upstream{{Name: "a", Addresses: []string{"10.0.0.1:110"}}}
	_, _, _, err := route.LoadMap("testdata/mistakes.map", upstreams...)
	fmt.Println(err)
	// Output:
	// route: testdata/mistakes.map:2: upstream "b" is not defined
	// route: testdata/mistakes.map:3: "alice" is already mapped on line 1
	// route: testdata/mistakes.map:4: want "key upstream", got 1 fields
}
