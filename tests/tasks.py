def noop(operation_id: str) -> str:
    return operation_id
