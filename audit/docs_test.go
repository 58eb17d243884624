package audit

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/popproxy/popproxy/proxy"
)

// backticked matches `name` where name is what events, rules and close
// reasons look like.
var backticked = regexp.MustCompile("`([a-z_]+(?:\\.[a-z_]+)*)`")

var parenthesised = regexp.MustCompile(`\([^()]*\)`)

// namesInRow returns the backticked names in the first table row of doc that
// starts with prefix, outside parentheses.
func namesInRow(t *testing.T, doc, prefix string) []string {
	t.Helper()
	i := strings.Index(doc, "\n"+prefix)
	if i < 0 {
		t.Fatalf("docs/audit.md has no row %q", prefix)
	}
	row, _, _ := strings.Cut(doc[i+1:], "\n")
	if cells := strings.SplitN(row, "|", 4); len(cells) == 4 {
		row = cells[3] // the meaning, after the field's name and type
	}
	row = parenthesised.ReplaceAllString(row, "") // explanations may name config keys
	var names []string
	for _, m := range backticked.FindAllStringSubmatch(row, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return names
}

func sortedStrings[S ~string](in []S) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = string(s)
	}
	slices.Sort(out)
	return out
}

// TestDocsNameWhatTheCodeHas fails when docs/audit.md or the README names an
// event, a policy rule or a close reason the code does not have, or when the
// code has one that docs/audit.md leaves out.
func TestDocsNameWhatTheCodeHas(t *testing.T) {
	raw, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, c := range []struct {
		row  string
		want []string
	}{
		{"| `event` |", sortedStrings(Events)},
		{"| `rule` |", sortedStrings(proxy.Rules)},
		{"| `reason` | string | how it ended", sortedStrings(proxy.CloseReasons)},
	} {
		if got := namesInRow(t, doc, c.row); !slices.Equal(got, c.want) {
			t.Errorf("docs/audit.md row %s names %v; the code has %v", c.row, got, c.want)
		}
	}

	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("`(limit\\.[a-z_.]+)`").FindAllStringSubmatch(string(readme), -1) {
		if !slices.Contains(proxy.Rules, proxy.Rule(m[1])) {
			t.Errorf("README names the rule %s, which the code does not have", m[1])
		}
	}
}
