from actgrad.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ParamType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARAM_TYPE_UNSPECIFIED: _ClassVar[ParamType]
    PARAM_TYPE_NUMBER: _ClassVar[ParamType]
    PARAM_TYPE_INTEGER: _ClassVar[ParamType]
    PARAM_TYPE_STRING: _ClassVar[ParamType]
    PARAM_TYPE_BOOL: _ClassVar[ParamType]
    PARAM_TYPE_TENSOR: _ClassVar[ParamType]
PARAM_TYPE_UNSPECIFIED: ParamType
PARAM_TYPE_NUMBER: ParamType
PARAM_TYPE_INTEGER: ParamType
PARAM_TYPE_STRING: ParamType
PARAM_TYPE_BOOL: ParamType
PARAM_TYPE_TENSOR: ParamType

class ParamValue(_message.Message):
    __slots__ = ("number", "integer", "text", "flag", "tensor")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    text: str
    flag: bool
    tensor: _tensor_pb2.Tensor
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ..., flag: _Optional[bool] = ..., tensor: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("function", "input", "params", "output_region")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REGION_FIELD_NUMBER: _ClassVar[int]
    function: str
    input: _tensor_pb2.Tensor
    params: _containers.MessageMap[str, ParamValue]
    output_region: _tensor_pb2.SharedMemoryRegion
    def __init__(self, function: _Optional[str] = ..., input: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., params: _Optional[_Mapping[str, ParamValue]] = ..., output_region: _Optional[_Union[_tensor_pb2.SharedMemoryRegion, _Mapping]] = ...) -> None: ...

class ActivateResponse(_message.Message):
    __slots__ = ("output",)
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    output: _tensor_pb2.Tensor
    def __init__(self, output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class GradientRequest(_message.Message):
    __slots__ = ("function", "input", "grad_output", "params", "return_output", "grad_input_region", "output_region")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    GRAD_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    RETURN_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    GRAD_INPUT_REGION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REGION_FIELD_NUMBER: _ClassVar[int]
    function: str
    input: _tensor_pb2.Tensor
    grad_output: _tensor_pb2.Tensor
    params: _containers.MessageMap[str, ParamValue]
    return_output: bool
    grad_input_region: _tensor_pb2.SharedMemoryRegion
    output_region: _tensor_pb2.SharedMemoryRegion
    def __init__(self, function: _Optional[str] = ..., input: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., grad_output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., params: _Optional[_Mapping[str, ParamValue]] = ..., return_output: _Optional[bool] = ..., grad_input_region: _Optional[_Union[_tensor_pb2.SharedMemoryRegion, _Mapping]] = ..., output_region: _Optional[_Union[_tensor_pb2.SharedMemoryRegion, _Mapping]] = ...) -> None: ...

class GradientResponse(_message.Message):
    __slots__ = ("grad_input", "grad_params", "output")
    class GradParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAD_INPUT_FIELD_NUMBER: _ClassVar[int]
    GRAD_PARAMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    grad_input: _tensor_pb2.Tensor
    grad_params: _containers.MessageMap[str, _tensor_pb2.Tensor]
    output: _tensor_pb2.Tensor
    def __init__(self, grad_input: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., grad_params: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class SoftmaxRequest(_message.Message):
    __slots__ = ("input", "axis", "temperature", "log", "output_region")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    AXIS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REGION_FIELD_NUMBER: _ClassVar[int]
    input: _tensor_pb2.Tensor
    axis: int
    temperature: float
    log: bool
    output_region: _tensor_pb2.SharedMemoryRegion
    def __init__(self, input: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., axis: _Optional[int] = ..., temperature: _Optional[float] = ..., log: _Optional[bool] = ..., output_region: _Optional[_Union[_tensor_pb2.SharedMemoryRegion, _Mapping]] = ...) -> None: ...

class SoftmaxResponse(_message.Message):
    __slots__ = ("output",)
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    output: _tensor_pb2.Tensor
    def __init__(self, output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ListFunctionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFunctionsResponse(_message.Message):
    __slots__ = ("functions",)
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    functions: _containers.RepeatedCompositeFieldContainer[FunctionInfo]
    def __init__(self, functions: _Optional[_Iterable[_Union[FunctionInfo, _Mapping]]] = ...) -> None: ...

class FunctionInfo(_message.Message):
    __slots__ = ("name", "aliases", "summary", "formula", "formula_latex", "gradient_note", "params", "elementwise", "dtypes", "axis_param")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    FORMULA_FIELD_NUMBER: _ClassVar[int]
    FORMULA_LATEX_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_NOTE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ELEMENTWISE_FIELD_NUMBER: _ClassVar[int]
    DTYPES_FIELD_NUMBER: _ClassVar[int]
    AXIS_PARAM_FIELD_NUMBER: _ClassVar[int]
    name: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    summary: str
    formula: str
    formula_latex: str
    gradient_note: str
    params: _containers.RepeatedCompositeFieldContainer[ParamInfo]
    elementwise: bool
    dtypes: _containers.RepeatedScalarFieldContainer[_tensor_pb2.DType]
    axis_param: str
    def __init__(self, name: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., summary: _Optional[str] = ..., formula: _Optional[str] = ..., formula_latex: _Optional[str] = ..., gradient_note: _Optional[str] = ..., params: _Optional[_Iterable[_Union[ParamInfo, _Mapping]]] = ..., elementwise: _Optional[bool] = ..., dtypes: _Optional[_Iterable[_Union[_tensor_pb2.DType, str]]] = ..., axis_param: _Optional[str] = ...) -> None: ...

class ParamInfo(_message.Message):
    __slots__ = ("name", "type", "description", "required", "default", "minimum", "maximum", "minimum_exclusive", "maximum_exclusive", "choices")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: ParamType
    description: str
    required: bool
    default: ParamValue
    minimum: float
    maximum: float
    minimum_exclusive: bool
    maximum_exclusive: bool
    choices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[ParamType, str]] = ..., description: _Optional[str] = ..., required: _Optional[bool] = ..., default: _Optional[_Union[ParamValue, _Mapping]] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., minimum_exclusive: _Optional[bool] = ..., maximum_exclusive: _Optional[bool] = ..., choices: _Optional[_Iterable[str]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("version", "onnx_opset", "onnxruntime_version", "execution_providers", "limits", "shared_memory")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ONNX_OPSET_FIELD_NUMBER: _ClassVar[int]
    ONNXRUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    version: str
    onnx_opset: int
    onnxruntime_version: str
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    shared_memory: bool
    def __init__(self, version: _Optional[str] = ..., onnx_opset: _Optional[int] = ..., onnxruntime_version: _Optional[str] = ..., execution_providers: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., shared_memory: _Optional[bool] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_elements", "max_rank", "max_concurrent_rpcs")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RANK_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RPCS_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_elements: int
    max_rank: int
    max_concurrent_rpcs: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_elements: _Optional[int] = ..., max_rank: _Optional[int] = ..., max_concurrent_rpcs: _Optional[int] = ...) -> None: ...
