"""Small JSON Schema builders shared by the run config and the methods' sections."""


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
