"""Small JSON Schema builders shared by the run config and the methods' sections, and the
one way tfnas reports a value that breaks a schema."""


def integer(minimum=None, nullable=False):
    spec = {"type": ["integer", "null"] if nullable else "integer"}
    if minimum is not None:
        spec["minimum"] = minimum
    return spec


def number(exclusive_minimum=None, maximum=None, exclusive_maximum=None, nullable=False,
           minimum=None):
    spec = {"type": ["number", "null"] if nullable else "number"}
    for key, value in (("exclusiveMinimum", exclusive_minimum), ("maximum", maximum),
                       ("exclusiveMaximum", exclusive_maximum), ("minimum", minimum)):
        if value is not None:
            spec[key] = value
    return spec


def obj(properties):
    return {"type": "object", "properties": properties}


BOOLEAN = {"type": "boolean"}
OPEN = {"type": "object"}
# A registry entry: a name, or an object whose "type" names it.
NAMED = {"type": ["string", "object"]}


def first_error(schema, instance):
    """`(path, message)` of the first error of `instance` against `schema` (in key order),
    or None. `path` lists the keys to the bad value, without list indices (an error inside
    a list item belongs to the list: export.formats); an `enum` message names the choices."""
    import jsonschema  # pylint: disable=import-outside-toplevel

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance),
                    key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return None
    err = errors[0]
    message = err.message
    if err.validator == "enum":
        message = f"{err.instance!r} is not one of {err.validator_value}"
    return [p for p in err.absolute_path if not isinstance(p, int)], message
