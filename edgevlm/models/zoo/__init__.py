"""The named models: every module here defines ``MODELS``, a list of ``ModelEntry``, and nothing else does.

vlms (autoneural-nano, fastvlm-nano, vit-nano and their -small sizes), encoders (enc-<family>-nano),
tinyconv (the compiler's smoke test).  ``edgevlm.models`` discovers them by importing each module of
this package; weights/ holds the nano VLMs' trained weights and the zoo's tokenizer.
"""
