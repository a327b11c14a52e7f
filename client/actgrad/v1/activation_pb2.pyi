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

class DenseRequest(_message.Message):
    __slots__ = ("input", "weight", "bias", "activation", "params", "gradient", "grad_output", "return_output", "return_net_output")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    INPUT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    GRAD_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RETURN_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RETURN_NET_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    input: _tensor_pb2.Tensor
    weight: _tensor_pb2.Tensor
    bias: _tensor_pb2.Tensor
    activation: str
    params: _containers.MessageMap[str, ParamValue]
    gradient: bool
    grad_output: _tensor_pb2.Tensor
    return_output: bool
    return_net_output: bool
    def __init__(self, input: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., weight: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., bias: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., activation: _Optional[str] = ..., params: _Optional[_Mapping[str, ParamValue]] = ..., gradient: _Optional[bool] = ..., grad_output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., return_output: _Optional[bool] = ..., return_net_output: _Optional[bool] = ...) -> None: ...

class DenseResponse(_message.Message):
    __slots__ = ("output", "net_output", "grad_input", "grad_weight", "grad_bias", "grad_params")
    class GradParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    NET_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    GRAD_INPUT_FIELD_NUMBER: _ClassVar[int]
    GRAD_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    GRAD_BIAS_FIELD_NUMBER: _ClassVar[int]
    GRAD_PARAMS_FIELD_NUMBER: _ClassVar[int]
    output: _tensor_pb2.Tensor
    net_output: _tensor_pb2.Tensor
    grad_input: _tensor_pb2.Tensor
    grad_weight: _tensor_pb2.Tensor
    grad_bias: _tensor_pb2.Tensor
    grad_params: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., net_output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., grad_input: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., grad_weight: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., grad_bias: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., grad_params: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class GradientFlowRequest(_message.Message):
    __slots__ = ("function", "params", "depth", "width", "batch", "init", "init_std", "seed", "residual", "normalize", "dtype")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    INIT_STD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    function: str
    params: _containers.MessageMap[str, ParamValue]
    depth: int
    width: int
    batch: int
    init: str
    init_std: float
    seed: int
    residual: bool
    normalize: bool
    dtype: _tensor_pb2.DType
    def __init__(self, function: _Optional[str] = ..., params: _Optional[_Mapping[str, ParamValue]] = ..., depth: _Optional[int] = ..., width: _Optional[int] = ..., batch: _Optional[int] = ..., init: _Optional[str] = ..., init_std: _Optional[float] = ..., seed: _Optional[int] = ..., residual: _Optional[bool] = ..., normalize: _Optional[bool] = ..., dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ...) -> None: ...

class GradientFlowResponse(_message.Message):
    __slots__ = ("act_rms", "grad_rms", "weight_grad_rms", "saturated", "dead", "ratio")
    ACT_RMS_FIELD_NUMBER: _ClassVar[int]
    GRAD_RMS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_GRAD_RMS_FIELD_NUMBER: _ClassVar[int]
    SATURATED_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    act_rms: _containers.RepeatedScalarFieldContainer[float]
    grad_rms: _containers.RepeatedScalarFieldContainer[float]
    weight_grad_rms: _containers.RepeatedScalarFieldContainer[float]
    saturated: _containers.RepeatedScalarFieldContainer[float]
    dead: _containers.RepeatedScalarFieldContainer[float]
    ratio: float
    def __init__(self, act_rms: _Optional[_Iterable[float]] = ..., grad_rms: _Optional[_Iterable[float]] = ..., weight_grad_rms: _Optional[_Iterable[float]] = ..., saturated: _Optional[_Iterable[float]] = ..., dead: _Optional[_Iterable[float]] = ..., ratio: _Optional[float] = ...) -> None: ...

class ListFunctionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFunctionsResponse(_message.Message):
    __slots__ = ("functions",)
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    functions: _containers.RepeatedCompositeFieldContainer[FunctionInfo]
    def __init__(self, functions: _Optional[_Iterable[_Union[FunctionInfo, _Mapping]]] = ...) -> None: ...

class FunctionInfo(_message.Message):
    __slots__ = ("name", "aliases", "summary", "formula", "formula_latex", "gradient_note", "params", "elementwise", "dtypes", "axis_param", "properties")
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
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
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
    properties: FunctionProperties
    def __init__(self, name: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., summary: _Optional[str] = ..., formula: _Optional[str] = ..., formula_latex: _Optional[str] = ..., gradient_note: _Optional[str] = ..., params: _Optional[_Iterable[_Union[ParamInfo, _Mapping]]] = ..., elementwise: _Optional[bool] = ..., dtypes: _Optional[_Iterable[_Union[_tensor_pb2.DType, str]]] = ..., axis_param: _Optional[str] = ..., properties: _Optional[_Union[FunctionProperties, _Mapping]] = ...) -> None: ...

class FunctionProperties(_message.Message):
    __slots__ = ("output_min", "output_max", "monotonic", "smooth", "zero_centred", "bounded_below", "bounded_above", "saturating_left", "saturating_right", "condition")
    OUTPUT_MIN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MAX_FIELD_NUMBER: _ClassVar[int]
    MONOTONIC_FIELD_NUMBER: _ClassVar[int]
    SMOOTH_FIELD_NUMBER: _ClassVar[int]
    ZERO_CENTRED_FIELD_NUMBER: _ClassVar[int]
    BOUNDED_BELOW_FIELD_NUMBER: _ClassVar[int]
    BOUNDED_ABOVE_FIELD_NUMBER: _ClassVar[int]
    SATURATING_LEFT_FIELD_NUMBER: _ClassVar[int]
    SATURATING_RIGHT_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    output_min: float
    output_max: float
    monotonic: bool
    smooth: bool
    zero_centred: bool
    bounded_below: bool
    bounded_above: bool
    saturating_left: bool
    saturating_right: bool
    condition: str
    def __init__(self, output_min: _Optional[float] = ..., output_max: _Optional[float] = ..., monotonic: _Optional[bool] = ..., smooth: _Optional[bool] = ..., zero_centred: _Optional[bool] = ..., bounded_below: _Optional[bool] = ..., bounded_above: _Optional[bool] = ..., saturating_left: _Optional[bool] = ..., saturating_right: _Optional[bool] = ..., condition: _Optional[str] = ...) -> None: ...

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
