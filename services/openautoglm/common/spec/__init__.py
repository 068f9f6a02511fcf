"""The study spec, one job per module.

- `schema`: the pydantic model of a spec and `validate_dict`; errors name the field.
- `templates`: prompt-template syntax (`{input}` and the search variables).
- `files`: reading a YAML/JSON spec file; errors name the file and line.
- `protos`: converting a spec (and parameter values, objectives, tasks) to and from protobuf.
- `candidates`: a candidate's content-hash id.
- `warm_start`: checking earlier trials against a search space, reading a prior-trials file.

Built-in names and defaults come from `openautoglm.common.catalogue`.
"""
