package backendtest

import (
	"testing"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/assert"
)

// TestSetModelRejectsViolations makes sure the model can fail a history, so
// that Linearizable passing means something.
func TestSetModelRejectsViolations(t *testing.T) {
	op := func(client int, in setInput, out any, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
	}
	tests := []struct {
		name    string
		history []porcupine.Operation
	}{
		{name: "two winners", history: []porcupine.Operation{
			op(0, setInput{opCheckAndMark, 0}, true, 1, 2),
			op(1, setInput{opCheckAndMark, 0}, true, 3, 4),
		}},
		{name: "unseen after mark", history: []porcupine.Operation{
			op(0, setInput{opCheckAndMark, 0}, true, 1, 2),
			op(1, setInput{opSeen, 0}, false, 3, 4),
		}},
		{name: "seen after forget", history: []porcupine.Operation{
			op(0, setInput{opCheckAndMark, 0}, true, 1, 2),
			op(0, setInput{opForget, 0}, nil, 3, 4),
			op(1, setInput{opSeen, 0}, true, 5, 6),
		}},
		{name: "duplicate before any mark", history: []porcupine.Operation{
			op(0, setInput{opCheckAndMark, 1}, false, 1, 2),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.False(t, porcupine.CheckOperations(setModel, tc.history))
		})
	}
}
