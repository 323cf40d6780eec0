"""deploy package of unsloth-recipes: from a trained LoRA run to files llama.cpp, Ollama, vLLM and TGI serve.

- :mod:`deploy.lora` reads PEFT adapters (LoRA, rsLoRA, rank/alpha patterns, DoRA, modules_to_save);
- :mod:`deploy.merge` merges them into the 16-bit base tensor by tensor (``merged/`` safetensors folder);
- :mod:`deploy.safetensors_io` lazy reading and streaming writing of safetensors;
- :mod:`deploy.gguf` streaming GGUF writer (Llama, Mistral, Qwen2/3, Phi-3, Gemma 2/3; f32/f16/bf16/q8_0;
  LoRA-only adapters); :mod:`deploy.llamacpp_convert` falls back to llama.cpp's own converter for the rest;
- :mod:`deploy.tokenizer_gguf` tokenizer (byte-level BPE and SentencePiece), special tokens, chat template;
- :mod:`deploy.tokenizer_files` a tokenizer folder read without transformers (``tokenizers`` + jinja2);
- ``python -m deploy.convert`` (:mod:`deploy.convert`) a model folder to GGUF without torch or transformers;
- :mod:`deploy.quantize` K-quants through llama.cpp (llama-cpp-python);
- :mod:`deploy.chat_structure` reads a chat template's structure from probe renders;
- :mod:`deploy.modelfile` / :mod:`deploy.gotemplate` Ollama Modelfile with a TEMPLATE checked against training;
- :mod:`deploy.verify` the parity gate (llama.cpp vs transformers);
- ``python -m deploy.export`` and ``python -m deploy.chat`` are the command lines.
"""
