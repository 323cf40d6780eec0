package main

// Go types shaped like Ollama's template values (template.templateMessage, templateToolCall, templateTool
// ...), with the same field names, so that field access, printing and ranging behave as in Ollama.

import (
	"encoding/json"
	"fmt"
	"strings"
)

// message is api.Message as it arrives in a chat request.
type message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking,omitempty"`
	Images     [][]byte   `json:"images,omitempty"`
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type toolCall struct {
	ID       string `json:"id,omitempty"`
	Function struct {
		Index     int            `json:"index"`
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	} `json:"function"`
}

// templateMessage is what a template sees in .Messages (Ollama: []*templateMessage).
type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     [][]byte
	ToolCalls  []templateToolCall
	ToolName   string
	ToolCallID string
}

type templateToolCall struct {
	ID       string
	Function templateToolCallFunction
}

type templateToolCallFunction struct {
	Index     int
	Name      string
	Arguments templateArgs
}

// templateArgs prints as JSON, like Ollama's.
type templateArgs map[string]any

func (t templateArgs) String() string {
	if t == nil {
		return "{}"
	}
	b, _ := json.Marshal(t)
	return string(b)
}

func convertMessages(msgs []*message) []*templateMessage {
	if msgs == nil {
		return nil
	}
	out := make([]*templateMessage, len(msgs))
	for i, m := range msgs {
		var calls []templateToolCall
		for _, tc := range m.ToolCalls {
			f := templateToolCallFunction{Index: tc.Function.Index, Name: tc.Function.Name, Arguments: tc.Function.Arguments}
			calls = append(calls, templateToolCall{ID: tc.ID, Function: f})
		}
		out[i] = &templateMessage{
			Role: m.Role, Content: m.Content, Thinking: m.Thinking, Images: m.Images,
			ToolCalls: calls, ToolName: m.ToolName, ToolCallID: m.ToolCallID,
		}
	}
	return out
}

// tool is api.Tool / Ollama's templateTool (same fields and JSON).
type tool struct {
	Type     string       `json:"type"`
	Items    any          `json:"items,omitempty"`
	Function toolFunction `json:"function"`
}

type toolFunction struct {
	Name        string             `json:"name"`
	Description string             `json:"description"`
	Parameters  toolFunctionParams `json:"parameters"`
}

type toolFunctionParams struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties templateProperties `json:"properties"`
}

type templateProperties map[string]toolProperty

func (t templateProperties) String() string {
	if t == nil {
		return "{}"
	}
	b, _ := json.Marshal(t)
	return string(b)
}

func (t tool) String() string {
	b, _ := json.Marshal(t)
	return string(b)
}

type templateTools []tool

func (t templateTools) String() string {
	b, _ := json.Marshal(t)
	return string(b)
}

// toolProperty is api.ToolProperty (nested Properties kept as a plain map here).
type toolProperty struct {
	AnyOf       []toolProperty          `json:"anyOf,omitempty"`
	Type        propertyType            `json:"type,omitempty"`
	Items       any                     `json:"items,omitempty"`
	Description string                  `json:"description,omitempty"`
	Enum        []any                   `json:"enum,omitempty"`
	Properties  map[string]toolProperty `json:"properties,omitempty"`
	Required    []string                `json:"required,omitempty"`
}

// propertyType is a JSON string or list of strings, printed as Ollama's PropertyType.String does.
type propertyType []string

func (pt *propertyType) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*pt = []string{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	*pt = a
	return nil
}

func (pt propertyType) MarshalJSON() ([]byte, error) {
	if len(pt) == 1 {
		return json.Marshal(pt[0])
	}
	return json.Marshal([]string(pt))
}

func (pt propertyType) String() string {
	switch len(pt) {
	case 0:
		return ""
	case 1:
		return pt[0]
	}
	return fmt.Sprintf("%v", []string(pt))
}

func (tp toolProperty) typeScript() string {
	if len(tp.AnyOf) > 0 {
		var types []string
		for _, a := range tp.AnyOf {
			types = append(types, a.typeScript())
		}
		return strings.Join(types, " | ")
	}
	if len(tp.Type) == 0 {
		return "any"
	}
	var types []string
	for _, t := range tp.Type {
		types = append(types, jsonTypeToTypeScript(t))
	}
	return strings.Join(types, " | ")
}

func jsonTypeToTypeScript(t string) string {
	switch t {
	case "string":
		return "string"
	case "number", "integer":
		return "number"
	case "boolean":
		return "boolean"
	case "array":
		return "any[]"
	case "object":
		return "Record<string, any>"
	case "null":
		return "null"
	}
	return "any"
}
