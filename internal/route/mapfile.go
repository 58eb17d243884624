package route

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxMapErrors bounds how many problems one map file reports.
const maxMapErrors = 20

// LoadMap reads the user map at path: one entry per line, a key and an
// upstream name separated by white space.
//
//	# comment
//	alice@example.com  backend-a   # one user (exact, case-sensitive)
//	@example.org       backend-b   # a domain (ASCII case-insensitive)
//	*                  backend-c   # everybody else
//
// Blank lines and lines starting with '#' are ignored, as is anything after
// the upstream name that starts with '#'. Domain keys are returned
// ASCII-lowercased, without the '@'. Lines may end in CRLF; a UTF-8 byte
// order mark at the start is skipped.
//
// If upstreams are given, every upstream name must be one of theirs, so that
// a typo is reported with its line number rather than later by New. The
// error lists every problem found (up to 20), each as "path:line: ...".
func LoadMap(path string, upstreams ...Upstream) (users, domains map[string]string, def string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, "", fmt.Errorf("route: %w", err)
	}
	defer f.Close()
	return parseMap(f, path+":", upstreams)
}

func parseMap(r io.Reader, where string, upstreams []Upstream) (users, domains map[string]string, def string, err error) {
	var known map[string]bool
	if len(upstreams) > 0 {
		known = make(map[string]bool, len(upstreams))
		for _, u := range upstreams {
			known[u.Name] = true
		}
	}
	users = make(map[string]string)
	domains = make(map[string]string)
	seen := make(map[string]int) // key as stored ("*", "@domain", user) -> line
	var errs []error
	bad := func(line int, format string, args ...any) {
		if len(errs) < maxMapErrors {
			errs = append(errs, fmt.Errorf("route: %s%d: %s", where, line, fmt.Sprintf(format, args...)))
		}
	}

	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		text := sc.Text()
		if n == 1 {
			text = strings.TrimPrefix(text, "\uFEFF")
		}
		fields := strings.Fields(text)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) < 2 || (len(fields) > 2 && !strings.HasPrefix(fields[2], "#")) {
			bad(n, "want \"key upstream\", got %d fields", len(fields))
			continue
		}
		key, name := fields[0], fields[1]
		if err := checkName(name); err != nil {
			bad(n, "upstream name %v", err)
			continue
		}
		if known != nil && !known[name] {
			bad(n, "upstream %q is not defined", name)
			continue
		}

		switch {
		case key == "*":
		case strings.HasPrefix(key, "@"):
			if err := checkDomain(key[1:]); err != nil {
				bad(n, "%v", err)
				continue
			}
			key = "@" + LowerASCII(key[1:])
		default:
			if why := badToken(key); why != "" {
				bad(n, "bad user name: %s", why)
				continue
			}
			if _, domain, hasAt := splitUser(key); hasAt && domain == "" {
				bad(n, "user name ends in '@'")
				continue
			}
		}
		if prev, dup := seen[key]; dup {
			bad(n, "%q is already mapped on line %d", key, prev)
			continue
		}
		seen[key] = n
		switch {
		case key == "*":
			def = name
		case key[0] == '@':
			domains[key[1:]] = name
		default:
			users[key] = name
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("route: %s%d: %w", where, n+1, err))
	}
	if len(errs) > 0 {
		return nil, nil, "", errors.Join(errs...)
	}
	return users, domains, def, nil
}
