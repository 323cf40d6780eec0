"""Raw chat/instruction data -> clean, chat-templated training data with assistant-only labels."""
