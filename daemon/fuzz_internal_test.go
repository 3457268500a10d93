package daemon

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
)

// expandOnce is the meaning of template substitution, written the plain way on
// decoded text: one pass from the left, each {{name}} of a declared param
// replaced by its value, and the values themselves never looked into.
func expandOnce(s string, values map[string]string) string {
	names := slices.Sorted(maps.Keys(values))
	var out strings.Builder
	for i := 0; i < len(s); {
		matched := false
		for _, n := range names {
			if ph := "{{" + n + "}}"; strings.HasPrefix(s[i:], ph) {
				out.WriteString(values[n])
				i += len(ph)
				matched = true
				break
			}
		}
		if !matched {
			out.WriteByte(s[i])
			i++
		}
	}
	return out.String()
}

// asJSONText is s as a JSON string holds it (invalid UTF-8 replaced).
func asJSONText(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// FuzzExpandTemplate checks template substitution in a spec's strings (values, a
// label's key, an argv entry): the spec stays valid JSON whatever the values hold
// (quotes, backslashes, control characters, invalid UTF-8, braces), and each
// string decodes to its text with every placeholder of a declared param replaced
// by the value, once.
func FuzzExpandTemplate(f *testing.F) {
	seeds := [][3]string{
		{"echo {{dir}}", "/home", "3"},
		{"{{dir}}-{{level}}", `a "quoted" \ value`, "\n\t\x00"},
		{"{{undeclared}} {{ dir }} {dir} {{dir}", "x", "y"},
		{"{{{dir}}}", "}", "{"},
		{"{{dir}}level}}", "{{", "L"},
		{"{{{{dir}}level}}", "", "L"},
		{"{{dir}}", "{{level}}", "expanded twice"},
		{"<{{level}}>&\u2028", "\xff\xfe", "</script>"},
		{"", "", ""},
		{"{{dir}}{{dir}}{{level}}{{level}}", "é", "日本"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, text, dir, level string) {
		values := map[string]string{"dir": dir, "level": level}
		spec := map[string]any{
			"name":   text,
			"labels": map[string]string{text: text},
			"steps":  []any{map[string]any{"exec": map[string]any{"argv": []string{"echo", text}}}},
		}
		raw, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		got := expandTemplate(raw, values)
		if !json.Valid(got) {
			t.Fatalf("expanding %s with %q gave invalid JSON %s", raw, values, got)
		}
		var back struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
			Steps  []struct {
				Exec struct {
					Argv []string `json:"argv"`
				} `json:"exec"`
			} `json:"steps"`
		}
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("decode %s: %v", got, err)
		}
		jv := map[string]string{"dir": asJSONText(dir), "level": asJSONText(level)}
		want := expandOnce(asJSONText(text), jv)
		if back.Name != want {
			t.Fatalf("%q with %q: name %q, want %q", text, values, back.Name, want)
		}
		if len(back.Labels) != 1 || back.Labels[want] != want {
			t.Fatalf("%q with %q: labels %q, want {%q: %q}", text, values, back.Labels, want, want)
		}
		if len(back.Steps) != 1 || !slices.Equal(back.Steps[0].Exec.Argv, []string{"echo", want}) {
			t.Fatalf("%q with %q: steps %+v", text, values, back.Steps)
		}
	})
}

// TestExpandTemplateValuesKeptAsText: a param's value is text put in place of its
// placeholder; a "{{other}}" inside a value, or one that a value completes with
// the text around it, is not a placeholder of the template and stays as it is.
func TestExpandTemplateValuesKeptAsText(t *testing.T) {
	cases := []struct {
		text, dir, level, want string
	}{
		{"{{dir}}", "{{level}}", "L", "{{level}}"},
		{"{{dir}}level}}", "{{", "L", "{{level}}"},
		{"{{{{dir}}level}}", "", "L", "{{level}}"},
	}
	for _, c := range cases {
		raw, _ := json.Marshal(map[string]string{"name": c.text})
		var back struct{ Name string }
		if err := json.Unmarshal(expandTemplate(raw, map[string]string{"dir": c.dir, "level": c.level}), &back); err != nil {
			t.Fatal(err)
		}
		if back.Name != c.want {
			t.Errorf("%q with dir=%q level=%q gives %q, want %q: a value was expanded again", c.text, c.dir, c.level, back.Name, c.want)
		}
	}
}
