// Command render_template executes Go text/template templates the way Ollama executes a Modelfile
// TEMPLATE for a chat request, so that tests can compare deploy/gotemplate.py with the real engine.
//
// Input (stdin): a JSON list of cases {"template": "...", "data": {"messages": [...], "tools": [...],
// "think": null | bool | "high"}}; messages and tools use the JSON of Ollama's api.Message / api.Tool.
// Output (stdout): a JSON list with, per case, {"output": "..."} or {"error": "..."} and
// "messages_path": whether Ollama would take its .Messages code path (the only one our emulator models).
//
// Written from the facts in ollama/ollama template/template.go and api/types.go (fetched at commit
// fb30760): Parse uses Option("missingkey=zero") and the FuncMap json/currentDate/yesterdayDate/
// toTypeScriptType; Execute collates the messages, then runs the template against a map with System,
// Messages ([]*templateMessage), Tools (templateTools), Response, Think, ThinkLevel and IsThinkSet.
// Standard library only, and Go 1.19 compatible (Debian's golang-go).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

type request struct {
	Messages []message `json:"messages"`
	Tools    []tool    `json:"tools"`
	Think    any       `json:"think"`
}

type testCase struct {
	Template string  `json:"template"`
	Data     request `json:"data"`
}

type result struct {
	Output       *string `json:"output,omitempty"`
	Error        *string `json:"error,omitempty"`
	MessagesPath bool    `json:"messages_path"`
}

func main() {
	var cases []testCase
	dec := json.NewDecoder(os.Stdin)
	if err := dec.Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "render_template: bad input JSON:", err)
		os.Exit(2)
	}
	results := make([]result, len(cases))
	for i, c := range cases {
		results[i] = run(c)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "render_template:", err)
		os.Exit(2)
	}
}

func run(c testCase) (res result) {
	// A template function may panic on bad input; Ollama would fail the request, so report an error.
	defer func() {
		if r := recover(); r != nil {
			msg := fmt.Sprint("panic: ", r)
			res.Output, res.Error = nil, &msg
		}
	}()
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
	if err != nil {
		msg := err.Error()
		return result{Error: &msg}
	}
	res.MessagesPath = usesMessages(tmpl)
	var b strings.Builder
	if err := tmpl.Execute(&b, values(c.Data)); err != nil {
		msg := err.Error()
		res.Error = &msg
		return res
	}
	out := b.String()
	res.Output = &out
	return res
}

// values is the map Ollama's Template.Execute passes on its .Messages path.
func values(r request) map[string]any {
	system, msgs := collate(r.Messages)
	think, level := thinkValues(r.Think)
	var tools templateTools
	if r.Tools != nil {
		tools = templateTools(r.Tools)
	}
	return map[string]any{
		"System":     system,
		"Messages":   convertMessages(msgs),
		"Tools":      tools,
		"Response":   "",
		"Think":      think,
		"ThinkLevel": level,
		"IsThinkSet": r.Think != nil,
	}
}

// thinkValues mirrors api.ThinkValue's Bool and String.
func thinkValues(v any) (bool, string) {
	switch t := v.(type) {
	case bool:
		if t {
			return true, "medium"
		}
		return false, ""
	case string:
		on := t == "high" || t == "medium" || t == "low" || t == "max"
		return on, t
	}
	return false, ""
}

// collate is Ollama's: system texts joined by blank lines; consecutive same-role messages merged
// (tool messages excepted); roles are lower-cased as api.Message's UnmarshalJSON does.
func collate(msgs []message) (string, []*message) {
	var system []string
	var collated []*message
	for i := range msgs {
		msgs[i].Role = strings.ToLower(msgs[i].Role)
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		n := len(collated)
		if n > 0 && collated[n-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[n-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

// usesMessages reports whether the template names "messages" (any case), which is how Ollama picks
// the .Messages path over its legacy Prompt/Response one.
func usesMessages(t *template.Template) bool {
	for _, tt := range t.Templates() {
		if tt.Tree != nil && mentions(tt.Root) {
			return true
		}
	}
	return false
}

func mentions(n parse.Node) bool {
	switch n := n.(type) {
	case *parse.ListNode:
		return n != nil && anyNode(n.Nodes)
	case *parse.ActionNode:
		return mentions(n.Pipe)
	case *parse.TemplateNode:
		return n.Pipe != nil && mentions(n.Pipe)
	case *parse.IfNode:
		return mentions(&n.BranchNode)
	case *parse.RangeNode:
		return mentions(&n.BranchNode)
	case *parse.WithNode:
		return mentions(&n.BranchNode)
	case *parse.BranchNode:
		return mentions(n.Pipe) || (n.List != nil && mentions(n.List)) || (n.ElseList != nil && mentions(n.ElseList))
	case *parse.PipeNode:
		for _, c := range n.Cmds {
			if anyNode(c.Args) {
				return true
			}
		}
	case *parse.FieldNode:
		return hasMessages(n.Ident)
	case *parse.VariableNode:
		return hasMessages(n.Ident)
	}
	return false
}

func anyNode(nodes []parse.Node) bool {
	for _, c := range nodes {
		if mentions(c) {
			return true
		}
	}
	return false
}

func hasMessages(idents []string) bool {
	for _, s := range idents {
		if strings.ToLower(s) == "messages" {
			return true
		}
	}
	return false
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	// Ollama ignores the format argument and always writes YYYY-MM-DD.
	"currentDate": func(args ...string) string {
		return time.Now().Format("2006-01-02")
	},
	"yesterdayDate": func(args ...string) string {
		return time.Now().AddDate(0, 0, -1).Format("2006-01-02")
	},
	"toTypeScriptType": func(v any) string {
		if p, ok := v.(toolProperty); ok {
			return p.typeScript()
		}
		if p, ok := v.(*toolProperty); ok && p != nil {
			return p.typeScript()
		}
		return "any"
	},
}
